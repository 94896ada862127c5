"""Cascade (base + super-resolution) vs one single-resolution model: FID and time to first preview.

    python scripts/bench_cascade.py --base <base last.ckpt> --sr <sr last.ckpt> \\
        --single <16x16 last.ckpt> --out docs/figures/cascade [--levels 0,0.1,0.2,0.4]

Both are scored the same way as train.py's final evaluation (diffusion_lab/metrics/report.py:
`quality` on `--num` samples drawn in batches of `--batch` with seed `--seed` + batch index,
against the training split; `real_floor` beside them), with the 16×16 model's data and cache.
Each checkpoint samples with its own stored sampler. Timing: one `--preview-num` batch (sample.py's
default 64) through the cascade (time to the base's preview, total) and through the single model.
`--levels` re-runs the super-resolution stage on the same base samples at other augmentation
levels s, with and without `resample_base`. Writes results.json and the sample grids to --out.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusion_lab.build import module_from_checkpoint  # noqa: E402
from diffusion_lab.cascade.pipeline import sample_cascade, sample_stage  # noqa: E402
from diffusion_lab.metrics.report import generate_many, quality, real_floor  # noqa: E402
from diffusion_lab.visualize import save_samples  # noqa: E402


def score(x, datamodule, cfg, cache_dir, n_real: int | None = None) -> dict:
    """FID/KID of x; with n_real, also of its first n_real samples (the real floor's count:
    FID's bias depends on the count, so only equal counts compare)."""
    s = quality(x, datamodule, cfg, cache_dir)
    if n_real is not None and n_real < len(x):
        s.update(quality(x[:n_real], datamodule, {**cfg, "num_samples": n_real}, cache_dir))
    return {k: v for k, v in s.items() if not k.endswith("_std")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", required=True)
    p.add_argument("--sr", required=True)
    p.add_argument("--single", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--num", type=int, default=2000)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--preview-num", type=int, default=64)
    p.add_argument("--levels", default="", help="comma-separated extra aug_sample levels")
    args = p.parse_args()
    torch.set_grad_enabled(False)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    base, base_parts, _ = module_from_checkpoint(args.base)
    sr, _, _ = module_from_checkpoint(args.sr)
    single, single_parts, single_cfg = module_from_checkpoint(args.single)
    datamodule, cache_dir = single_parts.datamodule, single_cfg.paths.cache_dir
    cfg = {**dict(single_cfg.evaluation), "metrics": ["fid", "kid"], "num_samples": args.num}
    results = {"args": vars(args), "aug_sample": sr.lowres.aug_sample}
    results["resample_base"] = sr.lowres.resample_base
    for name, path in (("base", args.base), ("sr", args.sr), ("single", args.single)):
        run = Path(path).parents[1] / "results.json"
        if run.is_file():
            facts = json.loads(run.read_text())
            results[f"{name}_train"] = {
                k: facts.get(k) for k in ("global_step", "fit_seconds", "train_images_per_s")
            }
    results["real_floor"] = real_floor(datamodule, cfg, cache_dir)
    n_real = min(args.num, len(datamodule.test_set))  # real_floor set the test split up

    # time to first preview, one sample.py-sized batch
    cascade = sample_cascade(base, [sr], args.preview_num, args.seed)
    start = time.perf_counter()
    x_single, _ = generate_many(single, args.preview_num, args.seed, args.preview_num)
    results["preview_batch"] = {
        "num_samples": args.preview_num,
        "cascade_time_to_preview_s": cascade.time_to_preview,
        "cascade_total_s": cascade.total_seconds,
        "cascade_nfe": cascade.nfe,
        "single_total_s": time.perf_counter() - start,
    }
    save_samples(cascade.images[0], out / "base_preview.png")
    save_samples(cascade.images[1], out / "cascade.png")
    save_samples(x_single, out / "single.png")

    # FID: single model
    start = time.perf_counter()
    x_single, nfe = generate_many(single, args.num, args.seed, args.batch)
    results["single"] = {"seconds": time.perf_counter() - start, "nfe": nfe}
    results["single"].update(score(x_single, datamodule, cfg, cache_dir, n_real))
    print(json.dumps(results["single"]), flush=True)

    # FID: cascade, batch b seeded seed + b (both stages)
    lows, highs, seconds, nfe = [], [], [0.0, 0.0], None
    for b in range(math.ceil(args.num / args.batch)):
        n = min(args.batch, args.num - b * args.batch)
        r = sample_cascade(base, [sr], n, args.seed + b)
        lows.append(r.images[0])
        highs.append(r.images[1])
        seconds = [seconds[0] + r.seconds[0], seconds[1] + r.seconds[1]]
        nfe = r.nfe
    x_low, x_high = torch.cat(lows), torch.cat(highs)
    results["cascade"] = {"base_seconds": seconds[0], "seconds": seconds[1], "nfe": nfe}
    results["cascade"].update(score(x_high, datamodule, cfg, cache_dir, n_real))
    print(json.dumps(results["cascade"]), flush=True)

    # the super-resolution stage alone, on the same base samples, at other levels / resampling
    sweep = []
    levels = [float(v) for v in args.levels.split(",") if v.strip()]
    for resample in (True, False) if levels else ():
        sr.lowres.resample_base = resample
        for level in levels:
            parts = []
            for b in range(math.ceil(args.num / args.batch)):
                chunk = x_low[b * args.batch : (b + 1) * args.batch]
                parts.append(sample_stage(sr, chunk, len(chunk), args.seed + b, 1, level=level)[0])
            x = torch.cat(parts)
            row = {"aug_sample": level, "resample_base": resample}
            row.update(score(x, datamodule, cfg, cache_dir))
            sweep.append(row)
            print(json.dumps(row), flush=True)
            save_samples(x[:64], out / f"sweep_s{level}_resample{int(resample)}.png")
    results["sweep"] = sweep
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
