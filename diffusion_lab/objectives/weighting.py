"""Loss weightings w(state) for the x0-MSE ‖D(x_t) − x0‖², per component in the basis.

uniform   w = 1
min_snr   w = min(SNR, γ), SNR = α²/σ²    (Hang et al. 2023, "Min-SNR weighting", x0 form)
edm       w = 1 / c_out² = (α²σ_d² + σ²) / (σ² σ_d²)   (Karras et al. 2022, λ(σ) in Table 1)

Shapes: state fields broadcast against U x; w has their broadcast shape.
"""

import torch
from torch import Tensor

from diffusion_lab.process import State

# σ² below this (float32 underflow near t = 0) would make w = inf, and inf · 0 = NaN
SIGMA2_FLOOR = 1e-20


class UniformWeighting:
    def __call__(self, state: State) -> Tensor:
        return torch.ones_like(state.sigma)


class MinSNR:
    def __init__(self, gamma: float = 5.0):
        if gamma <= 0:
            raise ValueError(f"objective.weighting.gamma must be > 0, got {gamma}")
        self.gamma = float(gamma)

    def __call__(self, state: State) -> Tensor:
        return state.snr.clamp(max=self.gamma)


class EDMWeighting:
    def __init__(self, sigma_data: float = 0.5):
        self.sigma_data = float(sigma_data)

    def __call__(self, state: State) -> Tensor:
        sd2, sigma2 = self.sigma_data**2, state.sigma.square().clamp_min(SIGMA2_FLOOR)
        return (state.alpha**2 * sd2 + sigma2) / (sigma2 * sd2)
