"""Noise schedules: monotone maps from t ∈ [0, 1] to a noise level.

Gaussian schedules are given as the log signal-to-noise ratio λ(t) = log(α²/σ²) (Kingma et al.
2021, "Variational Diffusion Models", γ = −λ), decreasing from +∞ (clean data) towards the prior,
with a closed-form inverse t(λ) used by time densities and sampling grids. The degradation decides
what λ means for α and σ (VP: α² = sigmoid(λ); VE: α = 1, σ = exp(−λ/2)).
"""

from diffusion_lab.schedules.base import LogSNRSchedule
from diffusion_lab.schedules.cosine import Cosine
from diffusion_lab.schedules.discrete import DiscreteLinearBeta
from diffusion_lab.schedules.edm import EDMSchedule
from diffusion_lab.schedules.linear import LinearBeta
from diffusion_lab.schedules.sigmoid import Sigmoid

__all__ = [
    "LogSNRSchedule",
    "LinearBeta",
    "DiscreteLinearBeta",
    "Cosine",
    "Sigmoid",
    "EDMSchedule",
]
