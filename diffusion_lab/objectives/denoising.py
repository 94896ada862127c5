"""Denoising score matching as x0 regression (Vincent 2011; Karras et al. 2022, eq. 8):

    L = E_{t, x0, z} w(t) ‖D(x_t; t) − x0‖².

With w = 1/c_out² and a log-normal t this is EDM's loss; with w = SNR it is DDPM's ε-MSE.
"""

from diffusion_lab.objectives.base import Objective
from diffusion_lab.objectives.weighting import UniformWeighting


class Denoising(Objective):
    def __init__(self, time, weighting=None):
        super().__init__(time)
        self.weighting = weighting or UniformWeighting()

    def error(self, state, c_t, c0, c0_hat, z):
        return self.weighting(state) * (c0_hat - c0) ** 2
