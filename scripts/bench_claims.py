"""The seed papers' sampler claims, measured on the checkpoints scripts/bench_corruptions.py trained.

    python scripts/bench_claims.py [--bench DIR] [--fid]

1. Cold Diffusion (Bansal et al. 2023, Tables 1-2): Alg. 2 (`cold`) restores degraded held-out
   images better than Alg. 1 (`cold_naive`). For cold_blur and pixelate: the digits test split
   (180 images) degraded to t = 0.5 and t = 1, restored by both algorithms with one step per
   level; RMSE against the originals in [−1, 1], and the RMSE of the degraded input beside it.
2. With --fid, generation FID of the same pairs at equal NFE through evaluate.py: Alg. 2 vs 1
   (cold_blur, pixelate) and Soft Diffusion's momentum sampler vs the naive one (blur_noise,
   blur_soft_score) — the run's seed-0 evaluation, samplers=[A,B].
Prints a markdown table; writes DIR/claims.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESTORATION = ("cold_blur", "pixelate")
SAMPLER_PAIRS = {  # family: (the paper's sampler, its baseline)
    "cold_blur": ("cold", "cold_naive"),
    "pixelate": ("cold", "cold_naive"),
    "blur_noise": ("momentum", "soft_naive"),
    "blur_soft_score": ("momentum", "soft_naive"),
}


@torch.no_grad()
def restoration_rmse(ckpt: Path, t_start: float) -> dict:
    """RMSE of Alg. 1 and Alg. 2 restorations of the test split degraded to t_start."""
    from diffusion_lab.checkpoint import module_from_checkpoint
    from diffusion_lab.metrics.report import _held_out_images
    from diffusion_lab.process import expand_t
    from diffusion_lab.samplers import cold, grids

    module, parts, cfg = module_from_checkpoint(ckpt)
    x0, _ = _held_out_images(parts.datamodule, 10_000)
    process, steps = module.process, int(cfg.sampler.num_steps)
    x_t = process.degrade(x0, expand_t(t_start, len(x0), x0.device))
    grid = partial(grids.starting_at, grid=grids.uniform, t_start=t_start)
    out = {"degraded": (x_t - x0).pow(2).mean().sqrt().item()}
    for name, algorithm in (("alg1", cold.naive), ("alg2", cold.improved)):
        x = algorithm(module.ema, process, x_t.clone(), num_steps=steps, grid=grid)
        out[name] = (x - x0).pow(2).mean().sqrt().item()
    return out


def fid_pair(bench: Path, family: str, samplers: tuple[str, str]) -> dict:
    """evaluate.py at the run's own step count for both samplers (seed 1234, 2k samples)."""
    out_dir = bench / "claims" / family
    if not (out_dir / "results.json").exists():
        cmd = [
            sys.executable,
            "evaluate.py",
            f"ckpt_path={bench / 'runs' / family / 'checkpoints' / 'last.ckpt'}",
        ]
        cmd += ["metrics=[fid]", f"samplers=[{','.join(samplers)}]", "evaluation.real_floor=false"]
        cmd += [f"hydra.run.dir={out_dir}"]
        log = bench / "logs" / f"{family}_claims.log"
        with open(log, "w") as f:
            subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, check=True)
    rows = json.loads((out_dir / "results.json").read_text())["samplers"]
    return {r["sampler"]: (r["nfe"], r["metrics"]["fid_digits_2k"]) for r in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--bench", type=Path, default=ROOT / "outputs" / "bench_corruptions" / "cpu"
    )
    parser.add_argument("--fid", action="store_true", help="also the FID comparisons (slow)")
    args = parser.parse_args()
    lines = [
        "Restoration of the digits test split (180 images), RMSE in [−1, 1] (lower is better):",
        "",
        "| family | from t | degraded input | Alg. 1 (cold_naive) | Alg. 2 (cold) | Alg. 2 better? |",
        "|---|---|---|---|---|---|",
    ]
    for family in RESTORATION:
        ckpt = args.bench / "runs" / family / "checkpoints" / "last.ckpt"
        if not ckpt.exists():
            lines.append(f"| {family} | — | no checkpoint at {ckpt} | | | |")
            continue
        for t in (0.5, 1.0):
            r = restoration_rmse(ckpt, t)
            better = "yes" if r["alg2"] < r["alg1"] else "no"
            lines.append(
                f"| {family} | {t} | {r['degraded']:.4f} | {r['alg1']:.4f} | {r['alg2']:.4f} | {better} |"
            )
    if args.fid:
        lines += [
            "",
            "Generation, fid_digits_2k at equal NFE (evaluation seed 1234):",
            "",
            "| family | paper's sampler | FID | baseline | FID | NFE | paper's better? |",
            "|---|---|---|---|---|---|---|",
        ]
        for family, (paper, baseline) in SAMPLER_PAIRS.items():
            if not (args.bench / "runs" / family / "checkpoints" / "last.ckpt").exists():
                continue
            r = fid_pair(args.bench, family, (paper, baseline))
            better = "yes" if r[paper][1] < r[baseline][1] else "no"
            lines.append(
                f"| {family} | {paper} | {r[paper][1]:.3g} | {baseline} | {r[baseline][1]:.3g} "
                f"| {r[paper][0]} | {better} |"
            )
    text = "\n".join(lines)
    (args.bench / "claims.md").write_text(
        f"`python scripts/bench_claims.py {' '.join(sys.argv[1:])}`\n\n{text}\n"
    )
    print(text)


if __name__ == "__main__":
    main()
