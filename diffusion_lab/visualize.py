"""Pictures people would rather look at than read: image grids and 2-D scatter plots."""

import math
from pathlib import Path

import torch
from torch import Tensor

from diffusion_lab.metrics.names import is_quality_key

MIN_TILE = 48  # pixels per grid tile


def save_samples(x: Tensor, path: str | Path) -> Path:
    """Images (B, C, H, W) in [−1, 1] → a PNG grid; 2-D points (B, 2) → a scatter plot."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = x.detach().float().cpu()
    if x.ndim == 4:
        from torchvision.utils import save_image

        scale = max(1, math.ceil(MIN_TILE / x.shape[-1]))  # small images are enlarged for viewing
        x = torch.nn.functional.interpolate(
            (x.clamp(-1, 1) + 1) / 2, scale_factor=scale, mode="nearest"
        )
        save_image(x, path, nrow=int(math.ceil(math.sqrt(x.shape[0]))), padding=2)
    elif x.ndim == 2 and x.shape[1] == 2:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4, 4))
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5)
        ax.set(xlim=(-1.5, 1.5), ylim=(-1.5, 1.5), aspect="equal")
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
    else:
        raise ValueError(f"cannot draw samples of shape {tuple(x.shape)}")
    return path


def plot_metric_vs_nfe(rows: list[dict], path: str | Path) -> Path | None:
    """One panel per sample-quality metric, one line per sampler: metric against NFE (log x)."""
    keys = sorted({k for r in rows for k in r["metrics"] if is_quality_key(k)})
    keys = [k for k in keys if not k.endswith("_std")]
    if not keys:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for sampler in dict.fromkeys(r["sampler"] for r in rows):
            pts = sorted((r["nfe"], r["metrics"][key]) for r in rows if r["sampler"] == sampler)
            ax.plot(*zip(*pts), marker="o", label=sampler)
        ax.set(xscale="log", xlabel="NFE", ylabel=key, title=key)
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
