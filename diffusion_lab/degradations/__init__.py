"""Degradations: turn a schedule's level at t into per-component α(t), σ(t) in a basis, or (Cold
Diffusion: ColdBlur, Pixelate, Snow) define a deterministic operator degrade(x0, t) themselves.
"""

from diffusion_lab.degradations.cold_blur import ColdBlur
from diffusion_lab.degradations.gaussian import VarianceExploding, VariancePreserving
from diffusion_lab.degradations.pixelate import Pixelate
from diffusion_lab.degradations.snow import Snow

__all__ = ["VariancePreserving", "VarianceExploding", "ColdBlur", "Pixelate", "Snow"]
