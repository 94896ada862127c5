"""Shared skeleton of the regression objectives: draw t and z, corrupt, denoise, compare.

Shapes: x0 (B, *data_shape); returns the per-sample loss (B,), averaged over components.
All errors are measured in the process's basis (orthonormal, so the pixel-space MSE for
isotropic weightings).

When t is drawn here (training), the time density's importance weights multiply the loss
(objectives/time.py: w = q/p, so an importance-sampled t still estimates the uniform-t objective),
and in training mode the density observes the unweighted per-sample losses. A given t (the
validation grid of module.py) is used as is: weight 1, nothing observed.
"""

import torch
from torch import Tensor, nn

from diffusion_lab.process import State, fp32


class Objective(nn.Module):
    def __init__(self, time):
        super().__init__()
        self.time = time

    def error(self, state: State, c_t: Tensor, c0: Tensor, c0_hat: Tensor, z: Tensor) -> Tensor:
        """Per-component weighted squared error, in basis coordinates."""
        raise NotImplementedError

    def forward(
        self,
        denoiser: nn.Module,
        process: nn.Module,
        x0: Tensor,
        cond: Tensor | None = None,
        t: Tensor | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        drawn, weight = t is None, None
        if drawn:
            t, weight = self.time.draw(x0.shape[0], process, x0.device)
        x_t, z, state = process.sample(x0, t, noise)
        x0_hat = denoiser(x_t, state, cond)
        with fp32(x0):
            basis = process.basis
            err = self.error(state, basis(x_t), basis(x0.float()), basis(x0_hat.float()), z)
            loss = err.flatten(1).mean(1)
        if drawn and self.training:
            self.time.observe(t, loss.detach())
        return loss if weight is None else loss * weight


def eps_hat(state: State, c_t: Tensor, c0_hat: Tensor) -> Tensor:
    """The noise implied by a denoised estimate: ẑ = (c_t − α ĉ0) / σ (0 where σ = 0: no noise there)."""
    sigma = state.sigma
    return torch.where(
        sigma > 0, (c_t - state.alpha * c0_hat) / torch.where(sigma > 0, sigma, 1.0), 0.0
    )
