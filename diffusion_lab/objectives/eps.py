"""ε-prediction loss (Ho et al. 2020, L_simple eq. 14): L = E ‖ẑ(x_t) − z‖², ẑ = (x_t − α D)/σ.

Equivalent to x0-MSE weighted by SNR = α²/σ². Per component in the basis, so with a GUD process
this is GUD's ε-MSE in (whitened) component space; components with σ = 0 (not yet noised) carry
no noise to predict and are left out.
"""

import torch

from diffusion_lab.objectives.base import Objective, eps_hat


class Eps(Objective):
    def error(self, state, c_t, c0, c0_hat, z):
        return torch.where(state.sigma > 0, (eps_hat(state, c_t, c0_hat) - z) ** 2, 0.0)
