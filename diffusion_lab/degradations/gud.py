"""GUD: diffusion in any orthonormal basis with a noise schedule per component (Gerdes et al. 2024).

Each component i has a generation order g_i ∈ [0, 1] (0 = generated first) and its own clock

    τ_i(t) = clip((t − s_i) / w, 0, 1),   w = softness / (1 + softness),   s_i = (1 − w)(1 − g_i),

so component i is noised during [s_i, s_i + w] (the soft-conditioning linear endpoints). In basis
coordinates c = U x the process is VP with the base log-SNR schedule λ(τ_i):

    α_i = sqrt(sigmoid(λ(τ_i))),   σ_i = sqrt(sigmoid(−λ(τ_i))) · s_i^whiten.

softness → ∞ gives w → 1, s_i → 0: ordinary diffusion in that basis. softness → 0 gives disjoint
windows: components are generated one after the other (autoregression in the order g). Components
whose clock has not started (τ_i = 0, λ = +∞) are clean (σ_i = 0); samplers keep them as they are.
`whiten=True` scales the noise by the data's std per component (diffusion of the whitened
components c_i/std_i — GUD's variance-adjusted setting), so every component reaches its own data
scale at t = 1. The variance used is floored at `variance_floor` × the mean component variance:
data of lower rank than the image (digits: 8×8 upsampled to 16×16 spans 61 of 256 PCA directions)
has components with no variance, whose noise std would otherwise be ~1e-4 and whose ε-error
α²/σ_i² ‖Δĉ0‖² then outweighed everything else (measured: 96 % of the ε-loss in the PCA basis,
78 % in the DCT basis, on components holding < 0.1 % of the variance). The "variance" order ranks
the floored variances with ties shared, so the components below the floor are generated last,
together, and the informative ones spread over the whole order range.
Orders: "frequency" (DCT/Fourier: low frequencies first), "variance" (high variance first; PCA),
"row" / "column" (pixel basis: top rows / left columns first), "none" (all together).
Shapes: α, σ (B, *data_shape).
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffusion_lab.degradations.base import Degradation, gaussian_prior_log_prob
from diffusion_lab.schedules.base import LogSNRSchedule

ORDERS = ("none", "frequency", "variance", "row", "column")


def _rank01(score: Tensor, shared_ties: bool = False) -> Tensor:
    """Normalised rank in [0, 1] of every entry (0 for the smallest). Ties keep index order, or
    with `shared_ties` get one rank (ranks then count distinct values)."""
    flat = score.flatten()
    if shared_ties:
        distinct, rank = torch.unique(flat, sorted=True, return_inverse=True)
        return (rank.to(flat.dtype) / max(len(distinct) - 1, 1)).view_as(score)
    rank = torch.empty_like(flat)
    rank[torch.argsort(flat, stable=True)] = torch.arange(flat.numel(), dtype=flat.dtype)
    return (rank / max(flat.numel() - 1, 1)).view_as(score)


class GUD(Degradation):
    schedule_type = LogSNRSchedule
    needs_statistics = True

    def __init__(
        self,
        basis: nn.Module,
        softness: float = 1.0,
        order: str = "frequency",
        whiten: bool = False,
        variance_floor: float = 1e-3,
    ):
        super().__init__()
        if not variance_floor > 0:
            raise ValueError(
                f"degradation.variance_floor must be > 0 (a fraction of the mean component "
                f"variance), got {variance_floor}"
            )
        self.variance_floor = float(variance_floor)
        if not softness > 0:
            raise ValueError(
                f"degradation.softness must be > 0 (use a large value for ordinary diffusion), got {softness}"
            )
        if order not in ORDERS:
            raise ValueError(f"degradation.order={order!r}; valid: {', '.join(ORDERS)}")
        self.basis, self.softness, self.order, self.whiten = (
            basis,
            float(softness),
            order,
            bool(whiten),
        )
        self.register_buffer("start", torch.zeros(0))
        self.register_buffer("noise_scale", torch.zeros(0))

    @property
    def full_rank_noise(self) -> bool:
        return self.order == "none" or self.softness == float("inf")

    @property
    def width(self) -> float:
        return 1.0 if self.order == "none" else self.softness / (1 + self.softness)

    def _generation_order(self, data_shape, variance: Tensor | None) -> Tensor:
        if self.order == "none":
            return torch.ones(data_shape)
        if self.order == "frequency":
            if not self.basis.has_frequencies:
                raise ValueError(
                    "degradation.order=frequency needs degradation.basis=dct or fourier"
                )
            return _rank01(self.basis.frequencies_squared.expand(data_shape).clone())
        if self.order == "variance":
            return _rank01(-variance, shared_ties=True)
        if len(data_shape) != 3:
            raise ValueError(
                f"degradation.order={self.order} needs images, got data of shape {tuple(data_shape)}"
            )
        _, h, w = data_shape
        rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        index = rows * w + cols if self.order == "row" else cols * h + rows
        return _rank01(index.float()).expand(data_shape).clone()

    def _component_variance(self, data_shape, statistics) -> Tensor:
        images = statistics.images.float()
        variance = self.basis(images).var(0)
        floor = max(self.variance_floor * variance.mean().item(), 1e-12)
        return variance.clamp(min=floor).view(data_shape)

    def setup(self, data_shape, statistics) -> None:
        """`statistics` None: the data-dependent start times and noise scales (order=variance,
        whiten=true) and the PCA basis come from a checkpoint."""
        self.basis.setup(data_shape, statistics)
        data_dependent = self.whiten or self.order == "variance"
        if statistics is None and data_dependent:
            return
        variance = (  # one pass of the basis over the statistics images, for order and whitening
            self._component_variance(data_shape, statistics) if data_dependent else None
        )
        order = self._generation_order(tuple(data_shape), variance)
        self.start = (1 - self.width) * (1 - order)
        self.noise_scale = variance.sqrt() if self.whiten else torch.ones(data_shape)

    def alpha_sigma(self, schedule, t: Tensor, data_shape):
        if self.start.numel() == 0:
            raise RuntimeError(
                "degradation=gud is not set up: build it with dataset statistics (build()) or "
                "load a checkpoint that holds its start times and noise scales"
            )
        t = t.float().view(-1, *[1] * len(data_shape))
        tau = ((t - self.start) / self.width).clamp(0, 1)
        logsnr = schedule.logsnr(tau)
        # in log space: sigmoid(−λ).sqrt() underflows to σ = 0 in float32 once λ > ~87
        alpha, sigma = torch.exp(0.5 * F.logsigmoid(logsnr)), torch.exp(0.5 * F.logsigmoid(-logsnr))
        return alpha, sigma * self.noise_scale

    def noise_cond(self, schedule, t: Tensor) -> Tensor:
        return t.float()

    def prior(self, schedule, shape, device=None, generator=None) -> Tensor:
        _, sigma = self.alpha_sigma(
            schedule, torch.ones(shape[0], device=self.start.device), shape[1:]
        )
        z = torch.randn(shape, generator=generator).to(sigma.device)
        return self.basis.inverse(sigma * z).to(device)

    def prior_log_prob(self, schedule, x1: Tensor) -> Tensor:
        return gaussian_prior_log_prob(self, schedule, x1)
