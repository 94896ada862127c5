"""Class match against classifier-free guidance scale, for a class-conditional checkpoint.

    python scripts/guidance_sweep.py --ckpt PATH [--scales 0,1,2,4] [--num 200] [--rescale 0]
                                     [--seed 0] [--num-steps N] [--out DIR] [--cache-dir DIR]
    python scripts/guidance_sweep.py ckpt_path=PATH scales=0,1,2,4 num=200   (Hydra-style keys)

For every guidance scale w the EMA model draws `num` samples from the same seeded prior, with the
requested classes spread evenly over 0..C-1 (equal consecutive blocks), and the project's domain
classifier (metrics/classifier.py, trained once and cached in this machine's paths.cache_dir; ~98%
test accuracy on digits) labels them. The class-match rate is the fraction whose predicted class
equals the requested one (chance = 1/C). Writes into DIR (default: <run>/guidance_sweep/):
  guidance_sweep.json  rates per w with their binomial standard errors, per-class rates,
                       within-class pixel std (diversity) and saturated-pixel fraction, the
                       classifier's accuracy, NFE (network calls; a guided call evaluates the
                       conditional and unconditional halves as one doubled batch) and timings
  guidance_sweep.png   a grid: rows = requested class, columns = w (a few samples each)
Exit status 2 with a message for unusable checkpoints (unconditional, no classifier possible).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from diffusion_lab.build import module_from_checkpoint  # noqa: E402
from diffusion_lab.checkpoint import CheckpointError  # noqa: E402
from diffusion_lab.cli import CONFIG_DIR  # noqa: E402
from diffusion_lab.guidance import spread_labels  # noqa: E402
from diffusion_lab.metrics.classifier import train_or_load_classifier  # noqa: E402
from diffusion_lab.sampling import generate_ema  # noqa: E402
from diffusion_lab.values import ConfigError, check_value  # noqa: E402

HYDRA_KEYS = {"ckpt_path": "--ckpt", "scales": "--scales", "num": "--num", "rescale": "--rescale"}


def class_match(
    module,
    classifier,
    num_classes: int,
    scales: list[float],
    num: int,
    *,
    seed: int = 0,
    rescale: float = 0.0,
    sampler=None,
    batch_size: int = 200,
) -> dict:
    """Rates per w (same prior draws for every w) and the samples, as {w: {...}}."""
    labels = spread_labels("all", num, num_classes)
    out = {}
    for w in scales:
        xs, nfe, start = [], 0, time.perf_counter()
        for b, i in enumerate(range(0, num, batch_size)):
            cond = labels[i : i + batch_size]
            x, n = generate_ema(
                module,
                len(cond),
                seed=seed + b,
                sampler=sampler,
                cond=cond,
                guidance=w,
                guidance_rescale=rescale,
            )
            xs.append(x.cpu())
            nfe += n
        x = torch.cat(xs)
        with torch.no_grad():
            pred = classifier(x.clamp(-1, 1).float()).argmax(1)
        hit = (pred == labels).float()
        rate = hit.mean().item()
        out[w] = {
            "rate": rate,
            "se": math.sqrt(rate * (1 - rate) / num),
            "per_class": [hit[labels == k].mean().item() for k in range(num_classes)],
            **spread_and_ink(x, labels, num_classes),
            "nfe": nfe,
            "seconds": time.perf_counter() - start,
            "samples": x,
            "labels": labels,
        }
    return out


def spread_and_ink(x, labels, num_classes: int) -> dict:
    """Diversity and saturation of samples in [−1, 1]: the mean over classes of the per-pixel std
    within a class, the mean intensity in [0, 1] and the fraction of pixels above 0.9."""
    x = (x.clamp(-1, 1) + 1) / 2
    spread = [x[labels == k].flatten(1).std(0).mean() for k in range(num_classes)]
    return {
        "within_class_std": torch.stack(spread).nanmean().item(),
        "mean_intensity": x.mean().item(),
        "saturated_fraction": (x > 0.9).float().mean().item(),
    }


def save_grid(results: dict, num_classes: int, path: Path, per_cell: int = 4) -> Path:
    """Rows = requested class, columns = w; `per_cell` samples of that class at that w."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scales = list(results)
    blocks = []
    for k in range(num_classes):
        row = []
        for w in scales:
            x = results[w]["samples"][results[w]["labels"] == k][:per_cell]
            cell = torch.cat(list((x[:, 0] + 1) / 2), dim=1)  # (H, per_cell * W)
            row += [cell, torch.ones(cell.shape[0], 4)]
        blocks += [torch.cat(row[:-1], dim=1), torch.ones(2, sum(c.shape[1] for c in row[:-1]))]
    image = torch.cat(blocks[:-1]).clamp(0, 1).numpy()
    height, width = results[scales[0]]["samples"].shape[-2:]
    cell_w = per_cell * width + 4
    fig, ax = plt.subplots(figsize=(1.1 + 0.45 * per_cell * len(scales), 0.5 + 0.45 * num_classes))
    ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([cell_w * j + per_cell * width / 2 for j in range(len(scales))])
    ax.set_xticklabels(
        [f"w={w:g}\n{100 * results[w]['rate']:.0f}% match" for w in scales], fontsize=8
    )
    ax.set_yticks([(height + 2) * k + height / 2 for k in range(num_classes)])
    ax.set_yticklabels([str(k) for k in range(num_classes)], fontsize=8)
    ax.set_ylabel("requested class")
    ax.tick_params(length=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", required=True, help="a class-conditional checkpoint")
    parser.add_argument("--scales", default="0,1,2,4", help="guidance scales w, comma-separated")
    parser.add_argument("--num", type=int, default=200, help="samples per scale")
    parser.add_argument("--rescale", type=float, default=0.0, help="guidance rescale φ in [0, 1]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-steps", type=int, default=None, help="sampler steps (run's default)")
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--out", default=None, help="output folder (default <run>/guidance_sweep)")
    parser.add_argument(
        "--cache-dir", default=None, help="classifier cache (default: paths.cache_dir)"
    )
    parser.add_argument("--device", default="auto")
    args = []
    for token in argv:  # ckpt_path=PATH scales=0,1 ... as Hydra users type them
        key, eq, value = token.partition("=")
        args += [HYDRA_KEYS[key], value] if eq and key in HYDRA_KEYS else [token]
    return parser.parse_args(args)


def local_paths(out: Path):
    """This machine's `paths` group (configs/paths/default.yaml), output_dir = `out`: caches and
    data go where the user running this keeps them, never where a checkpoint's config says."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        paths = compose(config_name="sample").paths
    return OmegaConf.create(
        {k: str(out) if k == "output_dir" else str(paths[k]) for k in paths.keys()}
    )


def main(argv=None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        scales = [float(s) for s in args.scales.split(",") if s.strip()]
        if args.num_steps is not None:
            check_value("--num-steps", args.num_steps, "steps")
        check_value("--seed", args.seed, "seed")
        out = (
            Path(args.out) if args.out else Path(args.ckpt).resolve().parents[1] / "guidance_sweep"
        )
        paths = local_paths(out)
        module, parts, cfg = module_from_checkpoint(args.ckpt, paths=paths)
        if not module.class_conditional:
            raise ValueError(
                f"{args.ckpt} was trained with conditional=false: guidance needs a checkpoint "
                "trained with conditional=true backbone.num_classes=N"
            )
        if not 0 <= args.rescale <= 1 or args.num < 1 or not scales:
            raise ValueError("--rescale must lie in [0, 1], --num >= 1 and --scales be non-empty")
        datamodule = parts.datamodule
        cache_dir = args.cache_dir or paths.cache_dir
        classifier, accuracy = train_or_load_classifier(datamodule, cache_dir)
    except (CheckpointError, ConfigError, ValueError) as err:
        print("error: " + " ".join(str(err).split()), file=sys.stderr)
        return 2
    device = (
        args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu"
    )
    module.to(device)
    sampler = parts.sampler
    if args.num_steps is not None:
        sampler = partial(parts.sampler, num_steps=args.num_steps)
    num_classes = datamodule.num_classes
    results = class_match(
        module,
        classifier,
        num_classes,
        scales,
        args.num,
        seed=args.seed,
        rescale=args.rescale,
        sampler=sampler,
        batch_size=args.batch_size,
    )
    out.mkdir(parents=True, exist_ok=True)
    grid = save_grid(results, num_classes, out / "guidance_sweep.png")
    report = {
        "ckpt_path": str(args.ckpt),
        "num_samples_per_scale": args.num,
        "requested_classes": f"0..{num_classes - 1}, {args.num // num_classes} or more each",
        "chance": 1 / num_classes,
        "guidance_rescale": args.rescale,
        "seed": args.seed,
        "sampler": cfg.choices.get("sampler") if "choices" in cfg else None,
        "num_steps": sampler.keywords.get("num_steps"),
        "classifier": str(classifier.checkpoint_path),
        "classifier_test_accuracy": accuracy,
        "label_dropout": module.label_dropout,
        "global_step": torch.load(args.ckpt, map_location="cpu", weights_only=True).get(
            "global_step"
        ),
        "nfe_counts": "network calls; with w != 1 each call evaluates a doubled batch",
        "rates": {f"{w:g}": r["rate"] for w, r in results.items()},
        "standard_errors": {f"{w:g}": r["se"] for w, r in results.items()},
        "per_class": {f"{w:g}": r["per_class"] for w, r in results.items()},
        "within_class_std": {f"{w:g}": r["within_class_std"] for w, r in results.items()},
        "mean_intensity": {f"{w:g}": r["mean_intensity"] for w, r in results.items()},
        "saturated_fraction": {f"{w:g}": r["saturated_fraction"] for w, r in results.items()},
        "nfe": {f"{w:g}": r["nfe"] for w, r in results.items()},
        "seconds": {f"{w:g}": r["seconds"] for w, r in results.items()},
        "grid": str(grid),
    }
    (out / "guidance_sweep.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"classifier test accuracy {accuracy:.3f}; class match (chance {1 / num_classes:.0%}):")
    for w, r in results.items():
        print(
            f"  w={w:<4g} {r['rate']:.3f} ± {r['se']:.3f}  within-class std "
            f"{r['within_class_std']:.3f}, saturated {r['saturated_fraction']:.3f}  "
            f"({r['nfe']} NFE, {r['seconds']:.0f} s)"
        )
    print(f"wrote {out / 'guidance_sweep.json'} and {grid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
