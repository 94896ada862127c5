"""Sampler × step count × grid on a trained checkpoint: FID (2k samples) beside the real floor.

    python scripts/bench_grids_digits.py CKPT [--rows ROWS.json] [--out DIR] [--num-samples 2000]

The closed-form benchmark (scripts/bench_samplers.py) picks grids on a Gaussian mixture; this
checks the choices on images before they become defaults. Each row is (sampler config name,
num_steps, grid overrides); the default rows compare the karras grid's defaults of issue 16
(σ̃_max = min(80, σ̃(1)), σ̃_min by step count) with the previous ones (σ̃(1), 0.002) and with
the log_snr grid. Results are appended to DIR/results.json as they come (a rerun skips rows
already there), then printed as a table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffusion_lab.build import module_from_checkpoint  # noqa: E402
from diffusion_lab.metrics.report import evaluate, real_floor  # noqa: E402

OLD = {"sigma_max": 1e9, "sigma_min": 0.002}  # before issue 16: σ̃(1) ≈ 148 → 0.002 (clipped)
EDM = {"sigma_max": 80.0, "sigma_min": 0.002}
DEFAULT_ROWS = [
    ("dpmpp", 5, "karras", {}),
    ("dpmpp", 5, "karras", EDM),
    ("dpmpp", 5, "karras", OLD),
    ("dpmpp", 5, "karras", {"sigma_min": 0.02}),
    ("dpmpp", 10, "karras", {}),
    ("dpmpp", 10, "karras", EDM),
    ("dpmpp", 10, "karras", OLD),
    ("dpmpp", 10, "log_snr", {}),
    ("dpmpp", 20, "karras", {}),
    ("dpmpp", 20, "karras", EDM),
    ("heun", 18, "karras", {}),
    ("heun", 18, "karras", EDM),
    ("heun", 18, "karras", OLD),
    ("ddim", 10, "uniform", {}),
    ("ddim", 20, "uniform", {}),
]


def _sampler(name: str, steps: int, grid: str, overrides: dict):
    cfg = compose(config_name="train", overrides=[f"sampler={name}", f"sampler/grid={grid}"])
    node = cfg.sampler
    node.num_steps = steps
    for key, value in overrides.items():
        node.grid[key] = value
    return instantiate(node)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt", type=Path)
    parser.add_argument("--rows", type=Path, help="JSON list of [sampler, steps, grid, {..}]")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_grids_digits")
    parser.add_argument("--num-samples", type=int, default=2000)
    args = parser.parse_args(argv)
    rows = json.loads(args.rows.read_text()) if args.rows else DEFAULT_ROWS
    args.out.mkdir(parents=True, exist_ok=True)
    store = args.out / "results.json"
    done = json.loads(store.read_text()) if store.exists() else {"rows": []}
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        evaluation = OmegaConf.to_container(compose("evaluate").evaluation, resolve=True)
        evaluation.update(metrics=["fid"], num_samples=args.num_samples)
        paths = compose("evaluate", overrides=[f"paths.output_dir={args.out}"]).paths
        module, parts, _ = module_from_checkpoint(args.ckpt, paths=paths)
        if "floor" not in done:
            done["floor"] = real_floor(parts.datamodule, evaluation, paths.cache_dir)
        for name, steps, grid, overrides in rows:
            key = f"{name} {steps} {grid} {json.dumps(overrides, sort_keys=True)}"
            if any(r["key"] == key for r in done["rows"]):
                continue
            sampler = _sampler(name, steps, grid, overrides)
            torch.manual_seed(0)
            scores = evaluate(module, parts.datamodule, evaluation, paths.cache_dir, sampler)
            fid = next(v for k, v in scores.items() if k.startswith("fid_"))
            done["rows"].append({"key": key, "nfe": scores["nfe"], "fid": fid})
            store.write_text(json.dumps(done, indent=1))
            print(f"{key}: NFE {scores['nfe']}, FID {fid:.4f}", flush=True)
    print(
        f"\nfloor: {done['floor']}\n\n| sampler steps grid overrides | NFE | FID |\n|---|---|---|"
    )
    for r in done["rows"]:
        print(f"| {r['key']} | {r['nfe']} | {r['fid']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
