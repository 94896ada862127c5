"""PyTorch fp32 vs ONNX Runtime fp32 / INT8 dynamic / INT8 static: size, CPU images/s and FID.

    DIFFUSION_LAB_ROOT=/work/runs OMP_NUM_THREADS=2 python scripts/bench_deploy.py \\
        --ckpt /work/runs/deploy/digits_default.ckpt --out /work/runs/deploy/bench \\
        --figures docs/figures/deploy

Every arm samples the same way train.py's final evaluation does (metrics/report.py
`generate_many`: `--num` samples in batches of evaluation.batch_size, sample i seeded by
(evaluation.seed, i), the checkpoint's own sampler) through `sampling.generate_ema`, with the EMA
denoiser (PyTorch) or diffusion_lab.deploy.OnnxDenoiser in its place, and is scored by
metrics/report.py `quality` (configs/evaluation/default.yaml: extractor=domain), so the PyTorch
row's FID is the number train.py reported; `real_floor` (real test images) beside it.
The exports are those of `python export.py` (diffusion_lab/deploy/). Size: the denoiser's weights
as saved (PyTorch: its EMA state_dict; ORT: the .onnx file). images/s: samples / sampling wall
time, torch and ORT each on `--threads` threads. fp16 needs a GPU: reported as not measured when
there is none. Writes bench_deploy.json to --out and a 64-sample grid per arm to --figures.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusion_lab.build import module_from_checkpoint  # noqa: E402
from diffusion_lab.cli import CONFIG_DIR  # noqa: E402
from diffusion_lab.deploy.onnx_export import (  # noqa: E402
    DenoiserAtTime,
    example_inputs,
    export_onnx,
    parity,
)
from diffusion_lab.deploy.quantize import MODES, calibration_data, quantize  # noqa: E402
from diffusion_lab.deploy.runtime import OnnxDenoiser  # noqa: E402
from diffusion_lab.metrics.report import quality, real_floor  # noqa: E402
from diffusion_lab.sampling import generate_ema, require_finite_samples  # noqa: E402
from diffusion_lab.visualize import save_samples  # noqa: E402


def paths_node(root: Path, out: Path):
    """configs/paths/default.yaml with root_dir = `root`: the shared classifier/statistics cache."""
    return OmegaConf.create(
        {
            "root_dir": str(root),
            "data_dir": str(root / "data"),
            "log_dir": str(root / "outputs"),
            "output_dir": str(out),
            "cache_dir": str(root / ".cache" / "diffusion_lab"),
        }
    )


def sample_all(denoiser, module, num: int, batch: int, seed: int):
    """metrics/report.py generate_many (sample i seeded by (seed, i)) with `denoiser` in place of
    the EMA, timing each batch: (x, NFE, the seconds of each batch)."""
    out, nfe, seconds = [], 0, []
    for start in range(0, num, batch):
        began = time.perf_counter()
        idx = range(start, min(start + batch, num))
        x, nfe = generate_ema(module, len(idx), seed=seed, indices=idx, denoiser=denoiser)
        seconds.append(time.perf_counter() - began)
        out.append(x.float().cpu())
    return require_finite_samples(torch.cat(out)), nfe, seconds


def weights_bytes(module: torch.nn.Module) -> int:
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ckpt", default="/work/runs/deploy/digits_default.ckpt")
    p.add_argument("--out", default="/work/runs/deploy/bench")
    p.add_argument("--figures", default="docs/figures/deploy")
    p.add_argument("--num", type=int, default=None, help="samples (default: evaluation's 2000)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--calibration-batches", type=int, default=16)
    p.add_argument("--calibration-batch-size", type=int, default=32)
    p.add_argument(
        "--where",
        action="store_true",
        help="only where INT8 differs: x̂0 error by t and difference grids, from the models "
        "a full run left in --out",
    )
    p.add_argument(
        "--fid-seeds",
        default="",
        help="only the PyTorch fp32 FID at these evaluation seeds (comma-separated): how much "
        "fid_digits_2k moves with the seed set alone",
    )
    args = p.parse_args()
    torch.set_grad_enabled(False)
    torch.set_num_threads(args.threads)
    root = Path(os.environ.get("DIFFUSION_LAB_ROOT", "/work/runs"))
    out, figures = Path(args.out), Path(args.figures)
    out.mkdir(parents=True, exist_ok=True)
    evaluation = OmegaConf.to_container(
        OmegaConf.load(Path(CONFIG_DIR) / "evaluation" / "default.yaml"), resolve=True
    )
    evaluation["metrics"] = ["fid"]
    num = args.num or evaluation["num_samples"]
    batch, seed = evaluation["batch_size"], int(evaluation["seed"])
    paths = paths_node(root, out)
    module, parts, run_cfg = module_from_checkpoint(args.ckpt, paths=paths)
    module.eval()
    datamodule, cache = parts.datamodule, paths.cache_dir

    if args.fid_seeds:
        for other in [int(v) for v in args.fid_seeds.split(",")]:
            x, _, _ = sample_all(module.ema, module, num, batch, other)
            fid = quality(x, datamodule, evaluation, cache)
            print(json.dumps({"seed": other, **{k: v for k, v in fid.items() if "fid" in k}}))
        return None
    if args.where:
        return where_int8_differs(module, datamodule, out, figures, args.threads, seed)
    model = DenoiserAtTime(module.ema, module.process).eval()
    shape = module.process.data_shape
    fp32 = out / "model.onnx"
    export = export_onnx(model, example_inputs(shape, 2), fp32)
    ort32 = OnnxDenoiser(fp32, threads=args.threads)
    check = parity(
        model, lambda x, t: ort32(x, module.process.state(t)), example_inputs(shape, 16, seed=1)
    )
    reader = calibration_data(
        datamodule, module.process, args.calibration_batches, args.calibration_batch_size
    )
    settings = {}
    for mode in ("dynamic", "static"):
        settings[mode] = quantize(fp32, out / f"model.int8_{mode}.onnx", mode, reader)

    arms = {
        "pytorch_fp32": (module.ema, weights_bytes(module.ema)),
        "ort_fp32": (ort32, fp32.stat().st_size),
        "ort_int8_dynamic": (
            OnnxDenoiser(out / "model.int8_dynamic.onnx", threads=args.threads),
            (out / "model.int8_dynamic.onnx").stat().st_size,
        ),
        "ort_int8_static": (
            OnnxDenoiser(out / "model.int8_static.onnx", threads=args.threads),
            (out / "model.int8_static.onnx").stat().st_size,
        ),
    }
    floor = real_floor(datamodule, evaluation, cache)
    n_real = int(next(k for k in floor if k.startswith("real_fid_")).rsplit("_", 1)[1])
    rows, reference = {}, None
    for name, (denoiser, size) in arms.items():
        x, nfe, seconds = sample_all(denoiser, module, num, batch, seed)
        reference = x if reference is None else reference
        scores = quality(x, datamodule, evaluation, cache)
        small = quality(x[:n_real], datamodule, {**evaluation, "num_samples": n_real}, cache)
        full_batches = [s for b, s in enumerate(seconds) if (b + 1) * batch <= num]
        rows[name] = {
            "size_mb": size / 1e6,
            # the median batch: other processes on a shared CPU slow some batches down
            "images_per_s": batch / statistics.median(full_batches or seconds),
            "sampling_seconds": sum(seconds),
            "nfe": nfe,
            "fid": next(v for k, v in scores.items() if k.startswith("fid_")),
            "fid_at_floor_count": next(v for k, v in small.items() if k.startswith("fid_")),
            "keys": [k for k in {**scores, **small} if k.startswith("fid_")],
            "max_abs_sample_diff_vs_pytorch": float((x - reference).abs().max()),
            "mean_abs_sample_diff_vs_pytorch": float((x - reference).abs().mean()),
        }
        save_samples(x[:64], figures / f"{name}.png")
        print(name, json.dumps(rows[name]), flush=True)
    rows["fp16"] = "not measured, no device" if not torch.cuda.is_available() else "not run"
    result = {
        "ckpt": args.ckpt,
        "sampler": OmegaConf.to_container(run_cfg.sampler),
        "num_samples": num,
        "batch": batch,
        "seed": seed,
        "threads": args.threads,
        "cpu": _cpu(),
        "export": export,
        "parity": check,
        "quantize": settings,
        "real_floor": floor,
        "extractor_accuracy": scores.get("extractor_accuracy"),
        "rows": rows,
    }
    (out / "bench_deploy.json").write_text(json.dumps(result, indent=2))
    print(table(result))


LEVELS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)


def where_int8_differs(module, datamodule, out: Path, figures: Path, threads: int, seed: int):
    """x̂0 of each INT8 model vs float32 at fixed t on real x_t (256 validation images, seeded
    noise), beside the float32 model's own error; and |Δ| grids of the first 64 samples."""
    datamodule.setup("validate")
    x0 = torch.stack([datamodule.val_set[i][0] for i in range(min(256, len(datamodule.val_set)))])
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(x0.shape, generator=gen)
    arms = {m: OnnxDenoiser(out / f"model.int8_{m}.onnx", threads=threads) for m in MODES}
    rows = []
    for level in LEVELS:
        t = torch.full((len(x0),), level)
        x_t = module.process.sample(x0, t, noise)[0]
        state = module.process.state(t)
        y32 = module.ema(x_t, state)
        row = {"t": level, "rms_fp32_vs_x0": float((y32 - x0).pow(2).mean().sqrt())}
        for mode, denoiser in arms.items():
            row[f"rms_int8_{mode}_vs_fp32"] = float(
                (denoiser(x_t, state) - y32).pow(2).mean().sqrt()
            )
        rows.append(row)
        print(json.dumps(row), flush=True)
    reference, _, _ = sample_all(module.ema, module, 64, 64, seed)
    grids = {}
    for mode, denoiser in arms.items():
        x, _, _ = sample_all(denoiser, module, 64, 64, seed)
        delta = (x - reference).abs()
        grids[mode] = {
            "max_abs": float(delta.max()),
            "mean_abs": float(delta.mean()),
            "pixels_off_by_0.1": float((delta > 0.1).float().mean()),
        }
        # |Δ| × 4 on a black background: white = a difference of 0.5 or more (of [−1, 1])
        save_samples((4 * delta).clamp(0, 2) - 1, figures / f"diff_int8_{mode}.png")
        print(mode, json.dumps(grids[mode]), flush=True)
    (out / "where_int8.json").write_text(json.dumps({"by_t": rows, "grids": grids}, indent=2))
    print("| t | " + " | ".join(k for k in rows[0] if k != "t") + " |")
    for row in rows:
        print(
            f"| {row['t']} | " + " | ".join(f"{v:.4f}" for k, v in row.items() if k != "t") + " |"
        )


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def table(result: dict) -> str:
    floor_key = next(k for k in result["real_floor"] if k.startswith("real_fid_"))
    floor = result["real_floor"][floor_key]
    first = result["rows"]["pytorch_fp32"]
    fid_key, small_key = first["keys"][0], first["keys"][-1]
    lines = [
        f"| arm | size MB | CPU images/s (batch {result['batch']}, NFE {first['nfe']}, "
        f"{result['threads']} threads) | {fid_key} | {small_key} | real floor {floor_key} |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in result["rows"].items():
        if isinstance(row, str):
            lines.append(f"| {name} (GPU) | {row} | {row} | {row} | {row} | {floor:.3f} |")
            continue
        lines.append(
            f"| {name} | {row['size_mb']:.2f} | {row['images_per_s']:.1f} | {row['fid']:.4f} | "
            f"{row['fid_at_floor_count']:.3f} | {floor:.3f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
