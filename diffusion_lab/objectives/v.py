"""v-prediction loss (Salimans & Ho 2022, §4): v = α z − σ x0,  L = E ‖v̂ − v‖².

v̂ = α ẑ − σ D with ẑ the implied noise; equivalent to x0-MSE weighted by (α² + σ²)² / σ²
(SNR + 1 for VP).
"""

from diffusion_lab.objectives.base import Objective, eps_hat


class V(Objective):
    def error(self, state, c_t, c0, c0_hat, z):
        v = state.alpha * z - state.sigma * c0
        v_hat = state.alpha * eps_hat(state, c_t, c0_hat) - state.sigma * c0_hat
        return (v_hat - v) ** 2
