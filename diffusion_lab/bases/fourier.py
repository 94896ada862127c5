"""The 2-D real orthonormal Fourier basis: the eigenbasis of the heat equation on a torus.

Why both this and the DCT exist: the DCT-II diagonalises the Laplacian with Neumann (reflecting)
boundaries, which is the heat dissipation of Rissanen et al. 2023 and avoids wrap-around artefacts
at image borders; the real Fourier basis diagonalises it with periodic boundaries, the classic
spectral basis among those GUD (Gerdes et al. 2024, "GUD: Generation with Unified Diffusion")
diffuses in. Both are real and orthonormal, so either can carry per-component α_i, σ_i.

The 1-D basis for length N, rows by increasing frequency k (ω = 2π k / N):

    k = 0                   1/√N
    k = 1 .. ⌈N/2⌉ − 1      √(2/N) cos(2π k n / N),  √(2/N) sin(2π k n / N)
    k = N/2 (N even)        cos(π n) / √N

Shapes: x and c are (B, C, H, W), c = M_H x M_Wᵀ per channel; `frequencies_squared` is (1, H, W)
with λ_ij = (2π k_i / H)² + (2π k_j / W)².
"""

import math

import torch
from torch import Tensor

from diffusion_lab.bases.dct import SeparableBasis


class Fourier(SeparableBasis):
    """Real orthonormal Fourier basis per channel (periodic boundaries)."""

    @staticmethod
    def basis_1d(n: int) -> tuple[Tensor, Tensor]:
        pos = torch.arange(n, dtype=torch.float64)
        rows, freqs = [torch.full((n,), 1 / math.sqrt(n), dtype=torch.float64)], [0]
        for k in range(1, math.ceil(n / 2)):
            phase = 2 * math.pi * k * pos / n
            rows += [math.sqrt(2 / n) * torch.cos(phase), math.sqrt(2 / n) * torch.sin(phase)]
            freqs += [k, k]
        if n % 2 == 0:
            rows.append(torch.cos(math.pi * pos) / math.sqrt(n))
            freqs.append(n // 2)
        omega = 2 * math.pi * torch.tensor(freqs, dtype=torch.float64) / n
        return torch.stack(rows), omega
