"""How well a trained autoencoder reconstructs held-out images, and what its latents cost.

`reconstruction_metrics(model, datamodule, cfg, cache_dir)` encodes the first `num_images` images
of the test split, decodes the posterior mean and reports

    psnr, ssim          torchmetrics, images mapped to [0, 1] (x̂ clamped), averaged per image
    rfid_<ext>_<n>      FID of the n reconstructions against the training split, with the same
                        feature extractor and key naming as sample FID (metrics/report.py), beside
                        real_fid_<ext>_<n>: the test images themselves, the floor any
                        reconstruction is measured against (a perfect autoencoder scores it)
    latent_shape        (z_channels, H / f, W / f)
    compression_ratio   pixel dims / latent dims (C·H·W / (z·h·w))
    kl_per_dim          mean KL(q(z|x) ‖ N(0, I)) per latent dimension, in nats
    latent_mean/std     of the posterior means (what LDM's scale factor 1/std normalises)

Shapes: images (N, C, H, W) in [-1, 1].
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor
from torchmetrics.image import StructuralSimilarityIndexMeasure

from diffusion_lab.autoencoder.kl import KLAutoencoder
from diffusion_lab.autoencoder.module import psnr
from diffusion_lab.metrics.report import _held_out_images, quality, real_floor


@torch.no_grad()
def reconstruct(model: KLAutoencoder, x: Tensor, batch_size: int = 500) -> tuple[Tensor, dict]:
    """(decode(mode(q(z|x))) on the CPU, latent statistics) for images x, in batches."""
    device = next(model.parameters()).device
    out, kl, z_sum, z_sq, n = [], 0.0, 0.0, 0.0, 0
    for chunk in x.split(batch_size):
        posterior = model.encode(chunk.to(device))
        z = posterior.mode()
        out.append(model.decode(z).float().cpu())
        kl += float(posterior.kl().sum())
        z_sum, z_sq, n = z_sum + float(z.sum()), z_sq + float(z.pow(2).sum()), n + z.numel()
    mean = z_sum / n
    stats = {
        "kl_per_dim": kl / n,
        "latent_mean": mean,
        "latent_std": math.sqrt(max(z_sq / n - mean**2, 0.0)),
    }
    return torch.cat(out), stats


def ssim(x: Tensor, x_hat: Tensor) -> float:
    """Mean SSIM (Wang et al. 2004; Gaussian window 11, σ 1.5) of images in [-1, 1], on [0, 1]."""
    metric = StructuralSimilarityIndexMeasure(data_range=1.0)
    return float(metric((x_hat.clamp(-1, 1) + 1) / 2, (x + 1) / 2))


def reconstruction_metrics(
    model: KLAutoencoder, datamodule, cfg: Mapping, cache_dir, floor: bool = True
) -> dict:
    """PSNR, SSIM, rFID (+ its real floor), latent shape, compression and KL of the test split.
    `cfg` is the evaluation node: num_images, extractor, batch_size, metrics (rfid or [])."""
    x, _ = _held_out_images(datamodule, int(cfg["num_images"]))
    x_hat, stats = reconstruct(model, x, int(cfg["batch_size"]))
    latent = model.latent_shape(tuple(x.shape[1:]))
    out: dict = {
        "num_images": len(x),
        "psnr": float(psnr(x, x_hat).mean()),
        "ssim": ssim(x, x_hat),
        "latent_shape": list(latent),
        "compression_ratio": x[0].numel() / math.prod(latent),
        **stats,
    }
    if "rfid" in cfg["metrics"]:
        fid_cfg = {
            "metrics": ["fid"],
            "extractor": cfg["extractor"],
            "kid_subset_size": 1000,
            "inception_weights": cfg.get("inception_weights"),
            "num_samples": len(x),
        }
        scores = quality(x_hat, datamodule, fid_cfg, cache_dir)
        out.update({("r" + k if k.startswith("fid_") else k): v for k, v in scores.items()})
        if floor:
            out.update(real_floor(datamodule, fid_cfg, cache_dir))
    return out
