"""The PCA basis: eigenvectors of the training data's pixel covariance, by decreasing variance.

GUD (Gerdes et al. 2024, "GUD: Generation with Unified Diffusion") diffuses in the data's PCA
basis so that each component gets its own schedule, ordered by how much variance it carries.
With Σ = V diag(v) Vᵀ the pixel covariance of the training split (columns of V sorted by
decreasing v):

    c = Vᵀ x  (written row-wise: flatten(c) = flatten(x) @ V),   x = V c.

The map is linear with NO mean subtraction, so x_t = Uᵀ(α ⊙ U x0 + σ ⊙ z) stays a linear
Gaussian process; the mean's energy lands mostly in the leading components.

Shapes: x and c are (B, *data_shape), images or vectors; V is (D, D), D = prod(data_shape);
`variance` (the v_i) has shape data_shape, aligned with the coefficients.
"""

import math

from torch import Tensor, nn


class PCA(nn.Module):
    """Orthonormal basis of covariance eigenvectors, built from dataset statistics in `setup`."""

    has_frequencies = False

    def __init__(self):
        super().__init__()
        self.register_buffer("components", None)  # (D, D), one eigenvector per column
        self.register_buffer("variance", None)  # data_shape

    def setup(self, data_shape: tuple[int, ...], statistics) -> "PCA":
        """Take V and v from `statistics` (a DatasetStatistics computed with pca enabled).
        `statistics` None: V and v come from a checkpoint (build.module_from_checkpoint)."""
        if statistics is None:
            return self
        components = statistics.pca_components
        if components is None:
            raise ValueError(
                "the PCA basis needs dataset statistics with PCA components; compute them with "
                "compute_statistics(datamodule, pca=True) (skipped by default for D > 4096)"
            )
        d = math.prod(data_shape)
        if components.shape != (d, d):
            raise ValueError(
                f"PCA components have shape {tuple(components.shape)}, expected ({d}, {d}) "
                f"for data_shape {tuple(data_shape)}"
            )
        self.components = components.float()
        self.variance = statistics.pca_variance.float().reshape(data_shape)
        return self

    def _matrix(self, x: Tensor) -> Tensor:
        if self.components is None:
            raise RuntimeError("PCA basis is not set up: call setup(data_shape, statistics) first")
        return self.components.to(x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        return (x.flatten(1) @ self._matrix(x)).reshape(x.shape)

    def inverse(self, c: Tensor) -> Tensor:
        return (c.flatten(1) @ self._matrix(c).T).reshape(c.shape)

    def extra_repr(self) -> str:
        return "" if self.components is None else f"D={len(self.components)}"
