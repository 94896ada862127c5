"""Noise-level and class-label embedding shared by the backbones.

The noise level enters as a real scalar per sample (e.g. c_noise = log(σ)/4, Karras et al. 2022),
not an integer timestep. It is lifted with random Fourier features (Tancik et al. 2020, used for
noise levels in Song et al. 2021, "Score-Based Generative Modeling through SDEs"), then mapped by a
two-layer SiLU MLP. An optional class embedding is added; index `num_classes` is the null label
(dropped or absent), as needed for classifier-free guidance (Ho & Salimans 2022).

Shapes: noise_cond (B,) float, cond (B,) long or None -> embedding (B, dim).
"""

import math

import torch
from torch import Tensor, nn


class FourierFeatures(nn.Module):
    """γ(s) = [cos(2π f s), sin(2π f s)] with fixed frequencies f ~ N(0, scale²)."""

    def __init__(self, num_features: int, scale: float = 16.0, seed: int = 0):
        super().__init__()
        if num_features % 2:
            raise ValueError(f"FourierFeatures needs an even num_features, got {num_features}")
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("freqs", torch.randn(num_features // 2, generator=generator) * scale)

    def forward(self, s: Tensor) -> Tensor:
        phase = 2 * math.pi * torch.outer(s.to(self.freqs.dtype), self.freqs)
        return torch.cat([phase.cos(), phase.sin()], dim=1)


class NoiseEmbedding(nn.Module):
    """emb = SiLU(MLP(γ(noise_cond)) + E[cond]); E has num_classes + 1 rows, the last one null."""

    def __init__(
        self,
        dim: int,
        num_features: int | None = None,
        num_classes: int | None = None,
        scale: float = 16.0,
        seed: int = 0,
    ):
        super().__init__()
        num_features = num_features or dim
        self.num_classes = num_classes
        self.fourier = FourierFeatures(num_features, scale, seed)
        self.mlp = nn.Sequential(nn.Linear(num_features, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.label = nn.Embedding(num_classes + 1, dim) if num_classes is not None else None

    def forward(self, noise_cond: Tensor, cond: Tensor | None = None) -> Tensor:
        if noise_cond.ndim != 1:
            raise ValueError(
                f"noise_cond must have shape (B,), got {tuple(noise_cond.shape)}; "
                "backbones take one real noise level per sample"
            )
        emb = self.mlp(self.fourier(noise_cond))
        if self.label is None:
            if cond is not None:
                raise ValueError(
                    "class labels were passed but backbone.num_classes is null; "
                    "set backbone.num_classes to the number of classes for a conditional model"
                )
        else:
            if cond is None:  # unconditional call of a conditional model: use the null label
                cond = torch.full_like(noise_cond, self.num_classes, dtype=torch.long)
            emb = emb + self.label(cond)
        return nn.functional.silu(emb)
