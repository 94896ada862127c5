"""Fitted priors p(x_1) for corruptions that leave data-dependent components alive (DESIGN §3).

Cold Diffusion (Bansal et al. 2022, §5) generates from blur that ends in the per-channel mean by
drawing that mean from a Gaussian mixture fitted to the training data:

    p(v) = Σ_k w_k N(v; μ_k, L_k L_kᵀ),   v ∈ R^d (d = channels for means, C·h·w for coarse pixels).

Fitting uses scikit-learn (full covariances); sampling is pure torch and seeded by a generator.
The parameters are buffers, so they travel with the checkpoint. Shapes: samples (N, d) → draws (n, d).
"""

import torch
from sklearn.mixture import GaussianMixture
from torch import Tensor, nn

_BUFFERS = ("weights", "means", "scale_tril")  # (K,), (K, d), (K, d, d)


class GaussianMixturePrior(nn.Module):
    def __init__(self):
        super().__init__()
        for name in _BUFFERS:  # sized by fit(), or by checkpoint.adopt_fitted_shapes
            self.register_buffer(name, torch.empty(0))

    @property
    def fitted(self) -> bool:
        return self.weights.numel() > 0

    def fit(self, samples: Tensor, n_components: int = 1, seed: int = 0) -> "GaussianMixturePrior":
        """Fit a full-covariance GMM to samples (N, d) by EM (k-means initialisation, seeded)."""
        x = torch.as_tensor(samples).detach().double().cpu().flatten(1)
        if n_components < 1 or x.shape[0] < n_components:
            raise ValueError(
                f"a {n_components}-component mixture needs at least {n_components} samples and "
                f"n_components >= 1; got {x.shape[0]} samples. Lower prior_components."
            )
        gmm = GaussianMixture(n_components, covariance_type="full", random_state=seed)
        gmm.fit(x.numpy())
        device = self.weights.device
        self.weights = torch.as_tensor(gmm.weights_).float().to(device)
        self.means = torch.as_tensor(gmm.means_).float().to(device)
        chol = torch.linalg.cholesky(torch.as_tensor(gmm.covariances_))
        self.scale_tril = chol.float().to(device)
        return self

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws (n, d) on the buffers' device; the generator's device draws the randomness."""
        if not self.fitted:
            raise RuntimeError(
                "the Gaussian-mixture prior is not fitted: build the process with dataset "
                "statistics (process.setup(statistics)) or load a checkpoint that holds it."
            )
        device = generator.device if generator is not None else self.weights.device
        k = torch.multinomial(self.weights.to(device), n, replacement=True, generator=generator)
        z = torch.randn(n, self.means.shape[1], generator=generator, device=device)
        k, z = k.to(self.means.device), z.to(self.means.device)
        return self.means[k] + (self.scale_tril[k] @ z.unsqueeze(-1)).squeeze(-1)

    def extra_repr(self) -> str:
        if not self.fitted:
            return "unfitted"
        return f"components={self.weights.numel()}, dim={self.means.shape[1]}"
