"""Pictures people would rather look at than read: image grids and 2-D scatter plots."""

import math
from pathlib import Path

from torch import Tensor


def save_samples(x: Tensor, path: str | Path) -> Path:
    """Images (B, C, H, W) in [−1, 1] → a PNG grid; 2-D points (B, 2) → a scatter plot."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = x.detach().float().cpu()
    if x.ndim == 4:
        from torchvision.utils import save_image

        save_image((x.clamp(-1, 1) + 1) / 2, path, nrow=int(math.ceil(math.sqrt(x.shape[0]))), padding=1)
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

