"""The 2-D orthonormal DCT-II basis: the eigenbasis of the heat equation with Neumann boundaries.

Heat dissipation (Rissanen, Heinonen & Solin 2023, "Generative Modelling with Inverse Heat
Dissipation", eq. 3-4) blurs an image by solving ∂u/∂τ = Δu with zero-flux (Neumann) boundaries.
The orthonormal DCT-II diagonalises that Laplacian, so the blur is per-coefficient scaling:

    u(τ) = Uᵀ exp(−Λ τ) U u(0),   λ_ij = (π i / H)² + (π j / W)²,   τ = σ_B² / 2,

i.e. α_ij = exp(−λ_ij σ_B² / 2). λ_00 = 0: the DC coefficient (the channel mean) never decays.

Shapes: x and c are (B, C, H, W); the basis acts on the last two axes of each channel,
c = M_H x M_Wᵀ with M_N the orthonormal (N, N) DCT-II matrix. `frequencies_squared` is (1, H, W).
"""

import abc
import math

import torch
from torch import Tensor, nn


class SeparableBasis(nn.Module, abc.ABC):
    """c = M_H x M_Wᵀ per channel, for orthonormal 1-D matrices given by `basis_1d`.

    Built lazily by `setup(data_shape)` (or at once with `data_shape=(C, H, W)`); the matrices
    and `frequencies_squared` are buffers, so they are saved in state dicts and checkpoints.
    """

    has_frequencies = (
        True  # frequencies_squared (1, H, W): squared spatial frequency per coefficient
    )

    def __init__(self, data_shape: tuple[int, ...] | None = None):
        super().__init__()
        self.register_buffer("matrix_h", None)  # (H, H)
        self.register_buffer("matrix_w", None)  # (W, W)
        self.register_buffer("frequencies_squared", None)  # (1, H, W)
        if data_shape is not None:
            self.setup(data_shape)

    @staticmethod
    @abc.abstractmethod
    def basis_1d(n: int) -> tuple[Tensor, Tensor]:
        """The orthonormal (n, n) float64 matrix (one basis vector per row) and the angular
        frequency ω (n,) of each row, so that the row's Laplacian eigenvalue is ω²."""

    def setup(self, data_shape: tuple[int, ...], statistics=None) -> "SeparableBasis":
        if len(data_shape) != 3:
            raise ValueError(
                f"{type(self).__name__} basis needs images (C, H, W); got data_shape "
                f"{tuple(data_shape)}: use the identity or PCA basis for vectors"
            )
        _, h, w = (int(s) for s in data_shape)
        m_h, omega_h = self.basis_1d(h)
        m_w, omega_w = self.basis_1d(w)
        self.matrix_h = m_h.float()
        self.matrix_w = m_w.float()
        self.frequencies_squared = (omega_h[:, None] ** 2 + omega_w[None, :] ** 2)[None].float()
        return self

    def _matrices(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.matrix_h is None:
            raise RuntimeError(
                f"{type(self).__name__} basis is not set up: call setup(data_shape) first"
            )
        return self.matrix_h.to(x.dtype), self.matrix_w.to(x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        m_h, m_w = self._matrices(x)
        return m_h @ x @ m_w.T

    def inverse(self, c: Tensor) -> Tensor:
        m_h, m_w = self._matrices(c)
        return m_h.T @ c @ m_w

    def extra_repr(self) -> str:
        return "" if self.matrix_h is None else f"H={len(self.matrix_h)}, W={len(self.matrix_w)}"


class DCT(SeparableBasis):
    """Orthonormal DCT-II per channel, equal to `scipy.fft.dctn(x, 2, norm='ortho', axes=(-2, -1))`.

    Row k of M_N: M_kn = s_k cos(π k (2n + 1) / 2N), s_0 = √(1/N), s_k = √(2/N); ω_k = π k / N.
    """

    @staticmethod
    def basis_1d(n: int) -> tuple[Tensor, Tensor]:
        k = torch.arange(n, dtype=torch.float64)
        m = torch.cos(math.pi * k[:, None] * (2 * k[None, :] + 1) / (2 * n)) * math.sqrt(2 / n)
        m[0] /= math.sqrt(2)
        return m, math.pi * k / n
