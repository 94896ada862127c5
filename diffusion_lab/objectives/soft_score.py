"""Soft Score Matching (Daras et al. 2022, eq. 8): match the observation after re-corruption,

    L = E_{t, x0, z} ‖A_t (D(x_t; t) − x0)‖²,   A_t = Uᵀ diag(α(t)) U,

i.e. in the basis, the x0 error weighted by α² per component. The network is not asked to recover
what the corruption has removed; it must produce a clean image that, corrupted again, explains
x_t. For isotropic noise (A_t = α I) this is the x0-MSE weighted by α².
"""

from diffusion_lab.objectives.base import Objective


class SoftScore(Objective):
    def error(self, state, c_t, c0, c0_hat, z):
        return (state.alpha * (c0_hat - c0)) ** 2
