"""Pixel- vs latent-space diffusion: FID beside its floors, and sampling images/s, in one process.

    python scripts/bench_latent.py NAME=CKPT [NAME=CKPT ...] [--out DIR] [--num-samples 2000]
                                   [--batch-size 500] [--data-dir DIR]

Each checkpoint (pixel or latent; loaded only through build.module_from_checkpoint, the target
allowlist) draws `--num-samples` EMA samples with its own sampler (batch b seeded 1234 + b, as
evaluate.py does); the seconds include a latent model's decoder. FID is torch-fidelity's on the
dataset's domain classifier, against the training split. Three floors, at the same count:

    real_val    held-out images of the training distribution (the val split): the floor
    real_test   the test split (on MNIST, other writers than train): results.json's real_fid
    ae_val      the first latent checkpoint's autoencoder reconstructions of the val split: what
                a latent model can reach at best, since every sample passes through its decoder

Writes DIR/results.json and DIR/<NAME>.png (64 samples each), then prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffusion_lab.build import module_from_checkpoint  # noqa: E402
from diffusion_lab.metrics.report import _held_out_images, generate_many, quality  # noqa: E402
from diffusion_lab.visualize import save_samples  # noqa: E402


def _fid(scores: dict) -> float:
    return next(v for k, v in scores.items() if k.startswith("fid_"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="NAME=CKPT")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_latent")
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--data-dir", help="paths.data_dir (where torchvision datasets lie)")
    args = parser.parse_args(argv)
    runs = dict(r.split("=", 1) for r in args.runs)
    args.out.mkdir(parents=True, exist_ok=True)
    overrides = [f"paths.output_dir={args.out}"]
    if args.data_dir:
        overrides.append(f"paths.data_dir={args.data_dir}")
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        cfg = compose("evaluate", overrides=overrides)
    evaluation = OmegaConf.to_container(cfg.evaluation, resolve=True)
    evaluation.update(metrics=["fid"], num_samples=args.num_samples)
    out: dict = {"num_samples": args.num_samples, "runs": {}, "floors": {}}
    datamodule, codec = None, None
    for name, ckpt in runs.items():
        module, parts, run_cfg = module_from_checkpoint(ckpt, paths=cfg.paths)
        datamodule = datamodule or parts.datamodule.pixels
        codec = codec or module.codec
        start = time.perf_counter()
        x, nfe = generate_many(module, args.num_samples, 1234, args.batch_size)
        seconds = time.perf_counter() - start
        save_samples(x[:64], args.out / f"{name}.png")
        ckpt_data = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
        out["runs"][name] = {
            "ckpt": str(ckpt),
            "latent": module.codec is not None,
            "data_shape": list(module.process.data_shape),
            "global_step": int(ckpt_data["global_step"]),
            "nfe": nfe,
            "sampling_seconds": seconds,
            "images_per_s": args.num_samples / seconds,
            "fid": _fid(quality(x, parts.datamodule, evaluation, cfg.paths.cache_dir)),
        }
        print(name, out["runs"][name], flush=True)
    val, _ = _held_out_images(datamodule, args.num_samples, split="val")
    test, _ = _held_out_images(datamodule, args.num_samples, split="test")
    floors = {"real_val": val, "real_test": test}
    if codec is not None:
        floors["ae_val"] = torch.cat(
            [codec.decode(codec.encode(val[i : i + 500])) for i in range(0, len(val), 500)]
        )
    for key, images in floors.items():
        out["floors"][key] = {
            "n": len(images),
            "fid": _fid(quality(images, datamodule, evaluation, cfg.paths.cache_dir)),
        }
    (args.out / "results.json").write_text(json.dumps(out, indent=1))
    print(f"\nfloors: {out['floors']}\n")
    print("| run | data shape | steps | FID | images/s (NFE) |\n|---|---|---|---|---|")
    for name, r in out["runs"].items():
        shape = "×".join(map(str, r["data_shape"]))
        print(
            f"| {name} | {shape} | {r['global_step']} | {r['fid']:.3f} | "
            f"{r['images_per_s']:.1f} ({r['nfe']}) |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
