"""Preconditioning: D(x_t) = c_skip ⊙ x_t + c_out ⊙ F(c_in ⊙ x_t, c_noise)  (Karras et al. 2022, eq. 7).

All coefficients are per component in the process's basis, so they apply unchanged to isotropic
noise (α, σ of shape (B,1,1,1)) and to per-frequency corruptions. With v = α²σ_d² + σ²:

  EDM (Table 1, generalised to α ≠ 1):  c_in = v^-½,  c_skip = α σ_d² / v,  c_out = σ σ_d / √v
  eps (Ho et al. 2020):  F predicts z:        c_skip = 1/α,           c_out = −σ/α
  v   (Salimans & Ho 2022): F predicts αz − σx0: c_skip = α/(α²+σ²),  c_out = −σ/(α²+σ²)
  x0:  F predicts x0:                          c_skip = 0,             c_out = 1
The eps, v and x0 forms scale the network input to unit variance too (c_in = v^-½), which is
DDPM's c_in = 1 for VP data of unit variance.

σ_d is one number by default. With `per_component=True` the builder passes the data's RMS per
component of the process's basis (a DCT spectrum, PCA variances): EDM's c_skip becomes the Wiener
filter of each component and c_out its posterior std, so a component the objective does not
constrain (Soft Score Matching at α ≈ 0) is predicted at the data's own scale, not at σ_d.
Measured on digits (docs/benchmarks.md), it hurts: per-component c_in whitens the network's input
(every DCT frequency at unit variance, so a blurred digit arrives as white-looking texture) and
1500 steps learn blobs, not digits; per-component c_skip and c_out alone (scalar c_in) did no
better. Blur and blur_noise therefore keep the scalar σ_d.
"""

import torch
from torch import Tensor

Coefficients = tuple[Tensor, Tensor, Tensor]  # (c_skip, c_out, c_in)


SigmaData = float | Tensor  # scalar, or per component (broadcasts against U x)


class _Precond:
    def __init__(self, sigma_data: float = 0.5, per_component: bool = False):
        if sigma_data <= 0:
            raise ValueError(f"precond.sigma_data must be > 0, got {sigma_data}")
        self.sigma_data = float(sigma_data)
        self.per_component = bool(per_component)

    def __call__(self, alpha: Tensor, sigma: Tensor, sigma_data: SigmaData | None = None):
        """(c_skip, c_out, c_in); `sigma_data` overrides the scalar σ_d (per-component RMS)."""
        return self.coefficients(
            alpha, sigma, self.sigma_data if sigma_data is None else sigma_data
        )

    def coefficients(self, alpha: Tensor, sigma: Tensor, sd: SigmaData) -> Coefficients:
        raise NotImplementedError

    @staticmethod
    def _c_in(alpha: Tensor, sigma: Tensor, sd: SigmaData) -> Tensor:
        return torch.rsqrt(alpha**2 * sd**2 + sigma**2)

    def __repr__(self) -> str:
        extra = ", per_component=True" if self.per_component else ""
        return f"{type(self).__name__}(sigma_data={self.sigma_data}{extra})"


class EDMPrecond(_Precond):
    def coefficients(self, alpha, sigma, sd):
        v = alpha**2 * sd**2 + sigma**2
        return alpha * sd**2 / v, sigma * sd * torch.rsqrt(v), torch.rsqrt(v)


class Eps(_Precond):
    def coefficients(self, alpha, sigma, sd):
        return 1 / alpha, -sigma / alpha, self._c_in(alpha, sigma, sd)


class V(_Precond):
    def coefficients(self, alpha, sigma, sd):
        n = alpha**2 + sigma**2
        return alpha / n, -sigma / n, self._c_in(alpha, sigma, sd)


class X0(_Precond):
    def coefficients(self, alpha, sigma, sd):
        return torch.zeros_like(alpha), torch.ones_like(alpha), self._c_in(alpha, sigma, sd)
