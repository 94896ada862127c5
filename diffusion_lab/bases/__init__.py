"""Orthonormal real bases U: `basis(x)` = U x (coefficients), `basis.inverse(c)` = Uᵀ c."""

from diffusion_lab.bases.identity import Identity

__all__ = ["Identity"]
