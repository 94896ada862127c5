"""Tolerances for tests that compare floating-point computations (issue 13 §3).

Float32 rounding depends on the x86-64 kernels a machine picks (AVX2 or AVX-512 FMA, BLAS blocking,
summation order), so a test comparing two float32 code paths must hold for any of them. Either

  - run both paths in float64 (the error then comes only from float32 *buffers* such as basis
    matrices or blur kernels, which are rounded once and are the same on every machine), or
  - derive the tolerance from the computation: EPS32 × (number of rounding steps or summed terms)
    × (magnitude of the values involved), the classical γ_n ≈ n·u bound with eps = 2u as headroom.

Each such comparison says which, in a short comment.
"""

import torch

EPS32 = torch.finfo(torch.float32).eps  # 2^-23: twice the float32 unit roundoff


def f32_tol(terms: int, magnitude: float) -> float:
    """Absolute tolerance of a float32 result accumulated over `terms` rounding steps (e.g. the
    inner dimensions of a chain of matmuls, or the taps × levels of repeated convolutions) on
    values of size `magnitude`: terms · EPS32 · magnitude."""
    return float(terms) * EPS32 * float(magnitude)
