"""Sampling speed: the project's sampler loop vs a diffusers DDIMPipeline, same machine, one run.

    python scripts/bench_diffusers.py [--dataset digits|mnist] [--batch 64] [--nfe 50]
                                      [--repeats 5] [--threads N] [--ckpt PATH] [--json PATH]
                                      [--profile N]

Ours: the default backbone (configs/backbone/unet.yaml) on `--dataset` (digits: 1×16×16, the
default run; mnist: 1×32×32, built without reading any MNIST file), VP cosine process, EDM
preconditioning, sampled by `diffusion_lab.sampling.generate` with the DDIM sampler of
configs/sampler/ddim.yaml (η = 0, uniform grid, NFE = num_steps). Weights are random unless
`--ckpt` gives a trained checkpoint (its dataset is then the checkpoint's); speed does not depend
on the weights.

Theirs: diffusers' `UNet2DModel` with the same layout (channels 32/64/64, one residual block per
level in the encoder and two in the decoder, self-attention with one 64-channel head at
resolution 8 and in the middle block, scale/shift time conditioning, positional time embedding
of width 32 → 128) and random weights, sampled by `DDIMPipeline(unet, DDIMScheduler(cosine
betas, 1000 training steps, no clipping))` with `num_inference_steps` = our NFE, η = 0 and
`output_type="pt"` (a tensor, like ours: no PIL/numpy conversion). Diffusers downsamples with a
strided 3×3 convolution where ours average-pools, so its network has ~4 % more parameters; both
counts are printed and must agree within `PARAM_TOLERANCE`.

Both run in float32, eval mode, under torch.no_grad, with the same torch thread count and batch;
NFE is counted on both sides (network calls). One warm-up run each, then `--repeats` timed runs
alternating ours/theirs (so drift hits both); images/s = batch / median seconds per run, and
batch / fastest run (less sensitive to other jobs on shared cores; the 1-minute load average
before and after is printed so a contended measurement shows). Prints a table row and the ratio
ours/diffusers (> 1: ours is faster); `--json` writes the numbers.
`--channels-last` puts both networks' weights in channels_last memory format (the project's
`channels_last=true` switch, applied to diffusers' network too). `--profile N` then prints torch.profiler's N most expensive operators of one run of each side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffusers import DDIMPipeline, DDIMScheduler, UNet2DModel  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import open_dict  # noqa: E402

from diffusion_lab.build import build, module_from_checkpoint  # noqa: E402
from diffusion_lab.cli import CONFIG_DIR  # noqa: E402
from diffusion_lab.sampling import generate  # noqa: E402

PARAM_TOLERANCE = 0.05  # |theirs / ours − 1| allowed between the two parameter counts
DATASETS = ("digits", "mnist")


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = tempfile.mkdtemp(prefix="bench_diffusers_")
    return cfg


def ours(dataset: str, nfe: int, ckpt: str | None):
    """(denoiser, process, sampler, image shape, backbone config) of the project's side."""
    overrides = [f"dataset={dataset}", "sampler=ddim", f"sampler.num_steps={nfe}"]
    if dataset == "mnist":
        overrides.append("dataset.download=false")
    cfg = _compose(overrides)
    if ckpt is not None:
        module, parts, run_cfg = module_from_checkpoint(
            ckpt, sampler_cfg=cfg.sampler, sampler_choice="ddim"
        )
        denoiser, backbone_cfg = module.ema, run_cfg["backbone"]
    else:
        torch.manual_seed(0)
        parts = build(cfg)
        denoiser, backbone_cfg = parts.denoiser, dict(cfg.backbone)
    denoiser.eval().requires_grad_(False)
    return denoiser, parts.process, parts.sampler, tuple(parts.process.data_shape), backbone_cfg


def diffusers_unet(channels: int, size: int, backbone_cfg) -> UNet2DModel:
    """A UNet2DModel laid out like ours: same channels per level, blocks per level, attention
    resolutions (attention at the levels whose side is in attn_resolutions, one head per 64
    channels) and time-embedding width."""
    base, mult = backbone_cfg["model_channels"], list(backbone_cfg["channel_mult"])
    sides = [size // 2**i for i in range(len(mult))]
    attn = [side in set(backbone_cfg["attn_resolutions"]) for side in sides]
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=tuple(base * m for m in mult),
        layers_per_block=backbone_cfg["num_res_blocks"],
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        attention_head_dim=64,
        norm_num_groups=min(32, base // 4),
        resnet_time_scale_shift="scale_shift",
        time_embedding_type="positional",
        dropout=0.0,
    ).eval()


def theirs(unet: UNet2DModel) -> DDIMPipeline:
    scheduler = DDIMScheduler(
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=False
    )
    pipe = DDIMPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("--dataset", choices=DATASETS, default="digits")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--nfe", type=int, default=50, help="DDIM steps = network calls")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="default: torch's own")
    parser.add_argument("--ckpt", default=None, help="our weights from a training checkpoint")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--profile", type=int, default=0, help="print the top N profiled ops")
    parser.add_argument(
        "--channels-last",
        action="store_true",
        help="both networks' weights and inputs in channels_last (the project's channels_last=true)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()

    denoiser, process, sampler, shape, backbone_cfg = ours(args.dataset, args.nfe, args.ckpt)
    channels, size = shape[0], shape[-1]
    unet = diffusers_unet(channels, size, backbone_cfg)
    if args.channels_last:  # what build_module does for channels_last=true, on both sides
        denoiser.backbone.to(memory_format=torch.channels_last)
        unet.to(memory_format=torch.channels_last)
    pipe = theirs(unet)
    params_ours, params_theirs = count(denoiser.backbone), count(unet)
    nfe_theirs = [0]
    unet.register_forward_pre_hook(lambda *_: nfe_theirs.__setitem__(0, nfe_theirs[0] + 1))

    def run_ours(seed: int) -> tuple[torch.Tensor, int]:
        return generate(denoiser, process, sampler, args.batch, seed=seed)

    def run_theirs(seed: int) -> tuple[torch.Tensor, int]:
        nfe_theirs[0] = 0
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            out = pipe(
                batch_size=args.batch,
                generator=gen,
                eta=0.0,
                num_inference_steps=args.nfe,
                output_type="pt",
            ).images
        return out, nfe_theirs[0]

    def timed(fn, seed):
        start = time.perf_counter()
        out, nfe = fn(seed)
        seconds = time.perf_counter() - start
        if out.shape != (args.batch, *shape) and out.shape != (args.batch, channels, size, size):
            raise RuntimeError(f"unexpected output shape {tuple(out.shape)}")
        if not torch.isfinite(out).all():
            raise RuntimeError("non-finite samples")
        return seconds, nfe

    load_before = os.getloadavg()[0]  # 1-min load: > threads means others shared the cores
    timed(run_ours, 0)  # warm-up
    timed(run_theirs, 0)
    seconds = {"ours": [], "theirs": []}
    nfe = {}
    for r in range(args.repeats):
        for name, fn in (("ours", run_ours), ("theirs", run_theirs)):
            s, n = timed(fn, 1 + r)
            seconds[name].append(s)
            nfe[name] = n
    ips = {k: args.batch / statistics.median(v) for k, v in seconds.items()}
    best = {k: args.batch / min(v) for k, v in seconds.items()}
    ratio, ratio_best = ips["ours"] / ips["theirs"], best["ours"] / best["theirs"]
    import diffusers

    result = {
        "dataset": args.ckpt and f"checkpoint {args.ckpt}" or args.dataset,
        "shape": list(shape),
        "batch": args.batch,
        "nfe_ours": nfe["ours"],
        "nfe_theirs": nfe["theirs"],
        "params_ours": params_ours,
        "params_theirs": params_theirs,
        "param_tolerance": PARAM_TOLERANCE,
        "images_per_s_ours": ips["ours"],
        "images_per_s_theirs": ips["theirs"],
        "ratio": ratio,
        "images_per_s_best_ours": best["ours"],
        "images_per_s_best_theirs": best["theirs"],
        "ratio_best": ratio_best,
        "load_average_before_after": [load_before, os.getloadavg()[0]],
        "seconds_ours": seconds["ours"],
        "seconds_theirs": seconds["theirs"],
        "repeats": args.repeats,
        "threads": threads,
        "dtype": "float32",
        "channels_last": args.channels_last,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
        "diffusers_config": {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in dict(unet.config).items()
            if not k.startswith("_")
        },
    }
    print(
        f"torch {torch.__version__}, diffusers {diffusers.__version__}, threads {threads}, "
        f"float32{', channels_last' if args.channels_last else ''}, {args.repeats} repeats "
        "(median) after one warm-up"
    )
    print(
        f"params ours {params_ours:,}, theirs {params_theirs:,} "
        f"({params_theirs / params_ours - 1:+.1%}; tolerance ±{PARAM_TOLERANCE:.0%})"
    )
    print("| setting | params ours / theirs | batch | NFE | images/s ours | theirs | ratio |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {result['dataset']} {'×'.join(map(str, shape))} | {params_ours:,} / "
        f"{params_theirs:,} | {args.batch} | {nfe['ours']} / {nfe['theirs']} | "
        f"{ips['ours']:.1f} | {ips['theirs']:.1f} | {ratio:.2f} |"
    )
    print(
        f"ratio ours/diffusers: {ratio:.3f} (median), {ratio_best:.3f} (best run: "
        f"{best['ours']:.1f} vs {best['theirs']:.1f} images/s); load average "
        f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after"
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    if abs(params_theirs / params_ours - 1) > PARAM_TOLERANCE:
        print("parameter counts differ by more than the tolerance", file=sys.stderr)
        return 1
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for name, fn in (("ours", run_ours), ("theirs", run_theirs)):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                fn(0)
            print(f"\n== profile: {name} ==")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
