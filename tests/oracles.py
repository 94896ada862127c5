"""Exact denoisers for data whose posterior mean is known in closed form (no training needed).

Data: x0 ~ Σ_k π_k N(μ_k, s_k² I) on shape `data_shape`. Under an isotropic Gaussian corruption
x_t = α x0 + σ z,  x_t | k ~ N(α μ_k, v_k I) with v_k = α² s_k² + σ², and
    E[x0 | x_t] = Σ_k r_k(x_t) (μ_k + α s_k² / v_k (x_t − α μ_k)),   r_k ∝ π_k N(x_t; α μ_k, v_k I).
"""

import math

import torch
from torch import Tensor, nn


class GaussianMixture(nn.Module):
    def __init__(self, weights, means: Tensor, stds, out_dtype=torch.float32):
        super().__init__()
        self.out_dtype = out_dtype  # of the posterior mean; float64 for float64 comparisons
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.means = means.double()  # (K, *data_shape)
        self.stds = torch.as_tensor(stds, dtype=torch.float64)  # (K,)

    def sample(self, n: int, generator=None) -> tuple[Tensor, Tensor]:
        k = torch.multinomial(self.weights.float(), n, replacement=True, generator=generator)
        z = torch.randn((n, *self.means.shape[1:]), generator=generator, dtype=torch.float64)
        return (self.means[k] + self.stds[k].view(-1, *[1] * (z.ndim - 1)) * z).float(), k

    def forward(self, x: Tensor, state, cond=None) -> Tensor:
        x = x.double()
        alpha, sigma = state.alpha.double(), state.sigma.double()
        dims = tuple(range(1, x.ndim))
        d = math.prod(x.shape[1:])
        log_r, posterior = [], []
        for w, mu, s in zip(self.weights, self.means, self.stds):
            v = alpha**2 * s**2 + sigma**2
            diff = x - alpha * mu
            log_r.append(
                torch.log(w) - 0.5 * (diff**2 / v).sum(dims) - 0.5 * d * torch.log(v.flatten())
            )
            posterior.append(mu + alpha * s**2 / v * diff)
        r = torch.softmax(torch.stack(log_r), dim=0)  # (K, B)
        out = sum(r_k.view(-1, *[1] * (x.ndim - 1)) * p for r_k, p in zip(r, posterior))
        return out.to(self.out_dtype)

    def classify(self, x: Tensor) -> Tensor:
        """Nearest component mean (for checking mixture weights of well-separated modes)."""
        dist = ((x.double().unsqueeze(0) - self.means.unsqueeze(1)) ** 2).flatten(2).sum(-1)
        return dist.argmin(0)


def gaussian(mean: float, std: float, data_shape=(4,), out_dtype=torch.float32) -> GaussianMixture:
    return GaussianMixture([1.0], torch.full((1, *data_shape), mean), [std], out_dtype)


def two_modes(
    data_shape=(2,), weight=0.3, sep=0.6, std=0.15, out_dtype=torch.float32
) -> GaussianMixture:
    means = torch.stack([torch.full(data_shape, -sep), torch.full(data_shape, sep)])
    return GaussianMixture([weight, 1 - weight], means, [std, std], out_dtype)
