"""Orthonormal real bases U: `basis(x)` = U x (coefficients), `basis.inverse(c)` = Uᵀ c."""

from diffusion_lab.bases.dct import DCT, SeparableBasis
from diffusion_lab.bases.fourier import Fourier
from diffusion_lab.bases.identity import Identity
from diffusion_lab.bases.pca import PCA

__all__ = ["DCT", "PCA", "Fourier", "Identity", "SeparableBasis"]
