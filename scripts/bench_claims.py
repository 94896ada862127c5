"""The seed papers' sampler claims, measured on the checkpoints scripts/bench_corruptions.py trained.

    python scripts/bench_claims.py [--bench DIR] [--fid]

1. Cold Diffusion (Bansal et al. 2023, Tables 1-2): Alg. 2 (`cold`) restores degraded held-out
   images better than Alg. 1 (`cold_naive`). For cold_blur and pixelate: the digits test split
   (180 images) degraded to t = 0.5 and t = 1, restored by both algorithms with one step per
   level; RMSE against the originals in [−1, 1], and the RMSE of the degraded input beside it.
2. With --fid, generation FID of the same pairs at equal NFE through evaluate.py: Alg. 2 vs 1
   (cold_blur, pixelate) and Soft Diffusion's momentum sampler vs the naive one (blur_noise,
   blur_soft_score) — the run's seed-0 evaluation, samplers=[A,B]; and Soft Diffusion (blur_noise)
   evaluated at the Gaussian row's NFE.
3. With --train, variants trained at the same preset and budget as the benchmark's families
   (scripts/bench_corruptions.py trains and scores them, into the same DIR): Daras et al.'s
   W2-equalised blur levels against geometric ones over the same σ_B range (blur_noise), and GUD's
   softness swept from near-autoregressive (0.1) to near-ordinary diffusion (100) in the DCT basis.
Prints markdown tables; writes DIR/claims.md. Stages with a results.json are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import bench_corruptions  # noqa: E402  (the benchmark's train/evaluate pipeline and preset)

RESTORATION = ("cold_blur", "pixelate")
SAMPLER_PAIRS = {  # family: (the paper's sampler, its baseline)
    "cold_blur": ("cold", "cold_naive"),
    "pixelate": ("cold", "cold_naive"),
    "blur_noise": ("momentum", "soft_naive"),
    "blur_soft_score": ("momentum", "soft_naive"),
}
# name: (train.py overrides, the benchmark family it is compared with, what is varied)
VARIANTS = {
    "blur_noise_geometric": (
        ["degradation=blur_noise", "schedule=blur_geometric", "schedule.sigma_min=0.05"],
        "blur_noise",
        "blur levels: geometric vs W2-equalised (Daras et al. 2022 §3.3), σ_B 0.05 → 20 both",
    ),
    "mask_denoising": (
        ["degradation=mask", "objective=denoising"],
        "mask",
        "objective: x0-MSE (EDM weighting) vs Soft Score Matching",
    ),
    "blur_noise_soft_score": (
        ["degradation=blur_noise", "objective=soft_score"],
        "blur_noise",
        "objective: Soft Score Matching (the paper's) vs x0-MSE",
    ),
    "gud_dct_softness0.1": (
        ["experiment=gud_dct_digits", "degradation.softness=0.1"],
        "gud_dct",
        "GUD softness 0.1 (near-autoregressive) vs 1",
    ),
    "gud_dct_softness100": (
        ["experiment=gud_dct_digits", "degradation.softness=100"],
        "gud_dct",
        "GUD softness 100 (near-ordinary diffusion) vs 1",
    ),
}
FID, IS = "fid_digits_2k", "is_digits_2k"


@torch.no_grad()
def restoration_rmse(ckpt: Path, t_start: float) -> dict:
    """RMSE of Alg. 1 and Alg. 2 restorations of the test split degraded to t_start."""
    from diffusion_lab.build import module_from_checkpoint
    from diffusion_lab.metrics.report import _held_out_images
    from diffusion_lab.process import expand_t
    from diffusion_lab.samplers import cold, grids

    module, parts, cfg = module_from_checkpoint(ckpt)
    x0, _ = _held_out_images(parts.datamodule, 10_000)
    process, steps = module.process, int(cfg.sampler.num_steps)
    x_t = process.degrade(x0, expand_t(t_start, len(x0), x0.device))
    grid = partial(grids.starting_at, grid=grids.uniform, t_start=t_start)
    out = {"degraded": (x_t - x0).pow(2).mean().sqrt().item()}
    for name, algorithm in (("alg1", cold.cold_naive), ("alg2", cold.cold)):
        x = algorithm(module.ema, process, x_t.clone(), num_steps=steps, grid=grid)
        out[name] = (x - x0).pow(2).mean().sqrt().item()
    return out


def evaluate(bench: Path, family: str, tag: str, extra: list[str]) -> list[dict]:
    """evaluate.py on a benchmark family's last.ckpt (seed 1234, 2k samples); its sampler rows."""
    out_dir = bench / "claims" / f"{family}_{tag}"
    if bench_corruptions.read_json(out_dir / "results.json") is None:
        ckpt = bench / "runs" / family / "checkpoints" / "last.ckpt"
        cmd = [sys.executable, "evaluate.py", f"ckpt_path={ckpt}", "metrics=[fid,is]"]
        cmd += ["evaluation.num_samples=2000", "evaluation.real_floor=false", *extra]
        cmd += [f"hydra.run.dir={out_dir}"]
        bench_corruptions.run(cmd, bench / "logs" / f"{family}_claims_{tag}.log", threads=1)
    return json.loads((out_dir / "results.json").read_text())["samplers"]


def fid_pair(bench: Path, family: str, samplers: tuple[str, str]) -> dict:
    """Both samplers at the run's own step count: {sampler: (NFE, FID, IS)}. IS with the digits
    classifier is at most 10 (the number of classes): low IS means samples crowd into few classes."""
    rows = evaluate(bench, family, "samplers", [f"samplers=[{','.join(samplers)}]"])
    return {r["sampler"]: (r["nfe"], r["metrics"][FID], r["metrics"][IS]) for r in rows}


def at_gaussian_nfe(bench: Path) -> tuple[int, float, float]:
    """(NFE, Gaussian FID, blur_noise FID at that NFE): Soft Diffusion's momentum sampler run
    with one step per network call of the Gaussian row's Heun sampler."""
    gaussian = json.loads((bench / "evals" / "gaussian" / "seed0" / "results.json").read_text())
    nfe, fid = gaussian["samplers"][0]["nfe"], gaussian["samplers"][0]["metrics"][FID]
    rows = evaluate(bench, "blur_noise", f"nfe{nfe}", [f"num_steps=[{nfe}]"])
    return nfe, fid, rows[0]["metrics"][FID] if rows[0]["nfe"] == nfe else float("nan")


def variant(bench: Path, name: str, overrides: list[str]) -> dict:
    """Train and score one variant exactly as the benchmark does its families (seed 0 only)."""
    args = argparse.Namespace(preset="cpu", set=[], report_only=False, seeds=1, nfe_curve=False)
    return bench_corruptions.family_pipeline(name, overrides, None, "", args, bench, threads=1)


def family_row(bench: Path, family: str) -> dict:
    rows = json.loads((bench / "corruptions.json").read_text())
    return next(r for r in rows if r["family"] == family)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--bench", type=Path, default=ROOT / "outputs" / "bench_corruptions" / "cpu"
    )
    parser.add_argument("--fid", action="store_true", help="also the FID comparisons (slow)")
    parser.add_argument("--train", action="store_true", help="also the trained variants (slower)")
    parser.add_argument("--jobs", type=int, default=2, help="evaluations/trainings at once")
    args = parser.parse_args()
    bench = args.bench
    has = lambda family: (bench / "runs" / family / "checkpoints" / "last.ckpt").exists()  # noqa: E731
    # The slow parts are independent subprocesses: start them first, one thread each.
    pool = ThreadPoolExecutor(args.jobs)
    variants = {n: pool.submit(variant, bench, n, v[0]) for n, v in VARIANTS.items() if args.train}
    pairs = {
        f: pool.submit(fid_pair, bench, f, p)
        for f, p in SAMPLER_PAIRS.items()
        if args.fid and has(f)
    }
    equal_nfe = pool.submit(at_gaussian_nfe, bench) if args.fid and has("blur_noise") else None

    torch.set_num_threads(max(1, (os.cpu_count() or 1) - args.jobs))
    lines = [
        "Restoration of the digits test split (180 images), RMSE in [−1, 1] (lower is better):",
        "",
        "| family | from t | degraded input | Alg. 1 (cold_naive) | Alg. 2 (cold) | Alg. 2 better? |",
        "|---|---|---|---|---|---|",
    ]
    for family in RESTORATION:
        if not has(family):
            lines.append(f"| {family} | — | no checkpoint in {bench / 'runs' / family} | | | |")
            continue
        for t in (0.5, 1.0):
            r = restoration_rmse(bench / "runs" / family / "checkpoints" / "last.ckpt", t)
            better = "yes" if r["alg2"] < r["alg1"] else "no"
            lines.append(
                f"| {family} | {t} | {r['degraded']:.4f} | {r['alg1']:.4f} | {r['alg2']:.4f} | {better} |"
            )
    if args.fid:
        lines += [
            "",
            f"Generation, {FID} at equal NFE (evaluation seed 1234):",
            "",
            "| family | paper's sampler | FID | IS | baseline | FID | IS | NFE | paper's better? |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for family, future in pairs.items():
            paper, baseline = SAMPLER_PAIRS[family]
            r = future.result()
            better = "yes" if r[paper][1] < r[baseline][1] else "no"
            lines.append(
                f"| {family} | {paper} | {r[paper][1]:.3g} | {r[paper][2]:.3g} | {baseline} "
                f"| {r[baseline][1]:.3g} | {r[baseline][2]:.3g} | {r[paper][0]} | {better} |"
            )
        if equal_nfe is not None:
            nfe, gauss, soft = equal_nfe.result()
            lines += [
                "",
                f"Soft Diffusion (blur_noise, momentum) at the Gaussian row's {nfe} NFE: "
                f"{FID} {soft:.3g} against the Gaussian's {gauss:.3g} ({soft / gauss:.2f}×).",
            ]
    if args.train:
        lines += [
            "",
            f"Variants at the benchmark's budget ({FID}, evaluation seed 1234; bits/dim on 64 "
            "test images):",
            "",
            "| run | what is varied | FID | bits/dim | NFE | against | its FID (same seed) | its bits/dim |",
            "|---|---|---|---|---|---|---|---|",
        ]
        fmt = bench_corruptions.fmt
        for name, future in variants.items():
            _, reference, varied = VARIANTS[name]
            r, ref = future.result(), family_row(bench, reference)
            lines.append(
                f"| {name} | {varied} | {fmt(r.get(FID))} | {fmt(r['bpd'])} | {r['nfe']} "
                f"| {reference} | {fmt((ref.get(FID + '_seeds') or [None])[0])} | {fmt(ref['bpd'])} |"
            )
    pool.shutdown()
    text = "\n".join(lines)
    (bench / "claims.md").write_text(
        f"`python scripts/bench_claims.py {' '.join(sys.argv[1:])}`\n\n{text}\n"
    )
    print(text)


if __name__ == "__main__":
    main()
