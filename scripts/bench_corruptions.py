"""Every corruption family trained at equal budget and scored side by side: one table, one figure.

    python scripts/bench_corruptions.py [--preset cpu|gpu] [--out DIR] [--jobs 2] [--only a,b]

Each family is `python train.py <preset> <family>` (same backbone, steps, batch, EMA, optimiser),
so the only difference between rows is the corruption and what its config group picks with it
(objective, preconditioning, sampler). Then, per family:
  - `evaluate.py` with the run's own sampler at `--seeds` sampling seeds (FID/KID on 2k samples for
    the cpu preset; mean and spread across seeds in the table), and once more at ¼ and ½ of its
    steps for the FID-against-NFE curve;
  - bits/dim (PF-ODE) where the process has full-rank noise (train.py's evaluation);
  - the real floor (test images against the training split) from the same extractor.
Writes into DIR (default outputs/bench_corruptions/<preset>):
  corruptions.md    the table (also printed), with the command line that made it
  corruptions.json  every number behind it
  corruptions.png   one row of samples per family, and FID against NFE per family
Stages that already have their results.json are skipped, so an interrupted run continues;
`--report-only` runs nothing and writes the table and figure from what is there.
Logs of each train/evaluate call go to DIR/logs/.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]

# name: (train.py overrides, FID target as a multiple of the Gaussian row's, the paper's claim)
FAMILIES = {
    "gaussian": ([], None, "reference: VP cosine, EDM precond, Heun"),
    "blur": (["degradation=blur"], 1.5, "heat dissipation ≈ diffusion (Rissanen et al. 2023)"),
    "blur_soft_score": (
        ["degradation=blur", "objective=soft_score"],
        1.5,
        "Soft Score Matching on blur (Daras et al. 2022)",
    ),
    "blur_noise": (["degradation=blur_noise"], 1.5, "Soft Diffusion ≈ diffusion (Daras et al.)"),
    "mask": (["degradation=mask"], 1.5, "masking + noise, soft score (Daras et al.)"),
    "gud_dct": (["experiment=gud_dct_digits"], 1.5, "GUD in the DCT basis (Gerdes et al. 2024)"),
    "gud_pca": (["experiment=gud_pca_digits"], 1.5, "GUD in the PCA basis (Gerdes et al. 2024)"),
    "cold_blur": (["degradation=cold_blur"], 3.0, "Cold Diffusion blur (Bansal et al. 2023)"),
    "pixelate": (["degradation=pixelate"], 3.0, "Cold Diffusion pixelate (Bansal et al.)"),
}

PRESETS = {
    # The default run's budget (digits 16×16, 1500 steps, batch 64, U-Net 32 ch): ≈ 80 min on 2 cores.
    "cpu": {
        "train": ["evaluation.nll.num_images=64", "num_samples=64"],
        "evaluate": ["evaluation.num_samples=2000"],
    },
    # Paper scale on one GPU: MNIST 28→32 from ../shared/data, a wider U-Net, 50k steps, 10k samples
    # scored with Inception. CIFAR-10: --set dataset=cifar10 (download it into paths.data_dir first).
    "gpu": {
        "train": [
            "dataset=mnist",
            f"paths.data_dir={ROOT.parent / 'shared' / 'data'}",
            "dataset.image_size=32",
            "backbone.model_channels=64",
            "backbone.channel_mult=[1,2,2,2]",
            "backbone.attn_resolutions=[16]",
            "dataset.batch_size=128",
            "trainer.max_steps=50000",
            "trainer.val_check_interval=5000",
            "trainer.precision=bf16-mixed",
            "ema.half_life_images=500000",
            "evaluation.extractor=inception",
            "evaluation.nll.num_images=1000",
            "num_samples=64",
        ],
        # blur keeps only the channel mean at σ_B ≈ 1.25 × the image side (configs/schedule/)
        "family": {f: ["schedule.sigma_max=40"] for f in ("blur", "blur_soft_score", "blur_noise")},
        "evaluate": [
            "evaluation.num_samples=10000",
            "evaluation.extractor=inception",
            "evaluation.batch_size=1000",
        ],
    },
}
SEED_STRIDE = 1000  # evaluation seeds 1234, 2234, ...: batch b uses seed + b, so no batch repeats


def run(cmd: list[str], log: Path, threads: int) -> float:
    """Run one CLI call, its output into `log`; returns wall seconds; raises on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    with open(log, "w") as f:
        f.write(shlex.join(cmd) + "\n\n")
        f.flush()
        proc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed (status {proc.returncode}); see {log}")
    return time.perf_counter() - start


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def family_pipeline(
    name: str, overrides: list[str], target, claim: str, args, out: Path, threads: int
) -> dict:
    """Train `name` (train.py with the preset and `overrides`), then evaluate it at every seed and
    the reduced step counts. Also used by bench_claims.py for its variants."""
    preset = PRESETS[args.preset]
    run_dir = out / "runs" / name
    py = sys.executable
    if read_json(run_dir / "results.json") is None and args.report_only:
        raise RuntimeError(f"{name}: not trained yet ({run_dir / 'results.json'} missing)")
    if read_json(run_dir / "results.json") is None:
        cmd = [py, "train.py", *preset["train"], *args.set, *overrides]
        cmd += preset.get("family", {}).get(name, [])
        cmd += ["evaluation.metrics=[nll]", f"hydra.run.dir={run_dir}"]
        run(cmd, out / "logs" / f"{name}_train.log", threads)
        print(f"[{time.strftime('%H:%M:%S')}] {name}: trained", flush=True)
    train = read_json(run_dir / "results.json")
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")  # resolves ${degradation.num_levels}
    steps = int(cfg.sampler.num_steps)
    ckpt = run_dir / "checkpoints" / "last.ckpt"

    evals = []
    plan = [(i, ["null"]) for i in range(args.seeds)]
    fewer = sorted({max(1, steps // 4), max(1, steps // 2)} - {steps})
    if args.nfe_curve and fewer:
        plan.append((0, [str(s) for s in fewer]))
    for seed_index, num_steps in plan:
        tag = f"seed{seed_index}" + ("" if num_steps == ["null"] else "_fewer_steps")
        eval_dir = out / "evals" / name / tag
        if read_json(eval_dir / "results.json") is None and args.report_only:
            continue
        if read_json(eval_dir / "results.json") is None:
            cmd = [py, "evaluate.py", f"ckpt_path={ckpt}", "metrics=[fid,kid]"]
            cmd += [*preset["evaluate"], f"num_steps=[{','.join(num_steps)}]"]
            cmd += [f"evaluation.seed={1234 + SEED_STRIDE * seed_index}"]
            cmd += [f"evaluation.real_floor={'true' if tag == 'seed0' else 'false'}"]
            cmd += [f"hydra.run.dir={eval_dir}"]
            try:
                run(cmd, out / "logs" / f"{name}_{tag}.log", threads)
            except RuntimeError as err:
                print(f"{name}: {err}", flush=True)
                continue
        evals.append((tag, read_json(eval_dir / "results.json")))
    print(f"[{time.strftime('%H:%M:%S')}] {name}: evaluated", flush=True)
    return summarize(name, target, claim, train, evals, ckpt)


def summarize(name, target, claim, train, evals, ckpt) -> dict:
    """One table row: quality mean/spread over seeds, bits/dim, NFE, seconds; plus the curve."""
    main = [r for tag, res in evals if not tag.endswith("fewer_steps") for r in res["samplers"]]
    curve = [r for tag, res in evals if tag.startswith("seed0") for r in res["samplers"]]
    keys = sorted({k for r in main for k in r["metrics"] if k.split("_")[0] in ("fid", "kid")})
    keys = [k for k in keys if not k.endswith(("_std", "_sem"))]
    row = {"family": name, "target": target, "claim": claim, "ckpt": str(ckpt)}
    for k in keys:
        vals = [r["metrics"][k] for r in main if k in r["metrics"]]
        row[k] = statistics.fmean(vals)
        row[k + "_spread"] = statistics.stdev(vals) if len(vals) > 1 else None
        row[k + "_seeds"] = vals
    row["nfe"] = main[0]["nfe"] if main else None
    row["sampling_seconds"] = statistics.fmean(r["seconds"] for r in main) if main else None
    evaluation = train.get("evaluation") or {}
    row["bpd"] = next((v for k, v in evaluation.items() if k.startswith("bpd_")), None)
    row["bpd_key"] = next((k for k in evaluation if k.startswith("bpd_")), None)
    row["fit_seconds"] = train.get("fit_seconds")
    row["floor"] = next((res.get("real_floor") for _, res in evals if res.get("real_floor")), {})
    row["curve"] = sorted(
        (r["nfe"], r["metrics"][keys[0]]) for r in curve if keys and keys[0] in r["metrics"]
    )
    return row


def fmt(v, spread=None) -> str:
    if v is None:
        return "—"
    s = f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return s + (f" ± {spread:.2g}" if spread is not None else "")


def table(rows: list[dict], command: str) -> str:
    def key(prefix):  # fid_digits_2k, not its _spread / _seeds companions
        extra = ("_spread", "_seeds")
        keys = (k for r in rows for k in r if k.startswith(prefix) and not k.endswith(extra))
        return next(keys, prefix + "missing")  # no family was scored: the columns show —

    fid, kid = key("fid_"), key("kid_")
    bpd = next((r["bpd_key"] for r in rows if r.get("bpd_key")), "bits/dim")
    ref = next((r.get(fid) for r in rows if r["family"] == "gaussian"), None)
    floor = next((r["floor"] for r in rows if r["floor"]), {})
    lines = [
        f"`{command}`",
        "",
        f"| family | {fid} (mean ± sd over seeds) | × gaussian | target | {kid} | {bpd} "
        "| NFE | train s | sampling s (per eval) | paper's claim |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = r.get(fid) / ref if ref and r.get(fid) is not None else None
        ok = (
            "" if r["target"] is None or ratio is None else (" ✓" if ratio <= r["target"] else " ✗")
        )
        target = "—" if r["target"] is None else f"≤ {r['target']}×{ok}"
        lines.append(
            f"| {r['family']} | {fmt(r.get(fid), r.get(fid + '_spread'))} | {fmt(ratio)} | {target} "
            f"| {fmt(r.get(kid), r.get(kid + '_spread'))} | {fmt(r['bpd'])} | {r['nfe']} "
            f"| {fmt(r['fit_seconds'])} | {fmt(r['sampling_seconds'])} | {r['claim']} |"
        )
    floor_fid = next((v for k, v in floor.items() if k.startswith("real_fid")), None)
    floor_kid = next((v for k, v in floor.items() if k.startswith("real_kid")), None)
    lines.append(
        f"| real test split (floor) | {fmt(floor_fid)} | | | {fmt(floor_kid)} | | | | | "
        f"{', '.join(k for k in floor if k.startswith('real_fid'))} |"
    )
    return "\n".join(lines)


def figure(rows: list[dict], path: Path, per_row: int = 12) -> None:
    """Left: `per_row` samples of each family (seed 0, EMA weights). Right: FID against NFE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from diffusion_lab.build import module_from_checkpoint
    from diffusion_lab.sampling import generate_ema

    fig = plt.figure(figsize=(14, 0.9 * len(rows) + 1))
    grid = fig.add_gridspec(len(rows), 2, width_ratios=[2.2, 1])
    for i, r in enumerate(rows):
        module, _, _ = module_from_checkpoint(r["ckpt"])
        x, _ = generate_ema(module, per_row, seed=0)
        x = ((x.float().clamp(-1, 1) + 1) / 2).cpu()
        strip = x.permute(2, 0, 3, 1).flatten(1, 2)  # (H, B·W, C)
        ax = fig.add_subplot(grid[i, 0])
        ax.imshow(strip.squeeze(-1).numpy() if strip.shape[-1] == 1 else strip.numpy(), cmap="gray")
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_ylabel(r["family"], rotation=0, ha="right", va="center")
    ax = fig.add_subplot(grid[:, 1])
    for r in rows:
        if r["curve"]:
            ax.plot(*zip(*r["curve"]), marker="o", label=r["family"])
    floor = next((v for r in rows for k, v in r["floor"].items() if k.startswith("real_fid")), None)
    if floor is not None:
        ax.axhline(floor, color="k", ls="--", lw=1, label="real floor")
    ax.set(xscale="log", yscale="log", xlabel="NFE", ylabel="FID (seed 0)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--jobs", type=int, default=2, help="families trained at once")
    parser.add_argument("--seeds", type=int, default=3, help="sampling seeds per family")
    parser.add_argument("--no-nfe-curve", dest="nfe_curve", action="store_false")
    parser.add_argument("--only", default=None, help="comma-separated families")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: the table and figure from the results already in --out",
    )
    parser.add_argument("--set", nargs="*", default=[], help="extra train.py overrides for all")
    args = parser.parse_args()
    names = list(FAMILIES) if args.only is None else args.only.split(",")
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        parser.error(f"unknown families {unknown}; choose from {list(FAMILIES)}")
    out = args.out or ROOT / "outputs" / "bench_corruptions" / args.preset
    out.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    start = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {
            n: pool.submit(family_pipeline, n, *FAMILIES[n], args, out, threads) for n in names
        }
    rows = []
    for n, fut in futures.items():
        try:
            row = fut.result()
        except Exception as err:  # one failed family does not lose the others
            print(f"{n}: {err}", file=sys.stderr)
            continue
        if row.get("nfe") is None:
            print(f"{n}: no evaluation yet", file=sys.stderr)
            continue
        rows.append(row)
    command = "python scripts/bench_corruptions.py " + shlex.join(sys.argv[1:])
    md = table(rows, command.strip())
    if not args.report_only:
        md += (
            f"\n\nTotal wall time {(time.perf_counter() - start) / 60:.1f} min ({args.jobs} jobs)."
        )
    md += "\n"
    (out / "corruptions.md").write_text(md)
    (out / "corruptions.json").write_text(json.dumps(rows, indent=1, default=str))
    if rows:
        figure(rows, out / "corruptions.png")
    print(md)
    print(f"figure: {out / 'corruptions.png'}")
    if len(rows) < len(names):
        sys.exit(1)


if __name__ == "__main__":
    main()
