"""Training-time densities p(t) over [t_min, 1].

uniform     t ~ U[t_min, 1]
stratified  one draw per stratum [i/B, (i+1)/B) of the batch (lower variance; Kingma et al. 2021)
log_normal  log(σ/α) ~ N(P_mean, P_std²), mapped to t by the schedule's inverse (Karras et al. 2022)
importance  loss-second-moment resampling of the uniform-t objective (Nichol & Dhariwal 2021, §3.3)

Interface (what `Objective.forward` calls):
  `density(batch, process, device) -> t (batch,)` for the fixed densities;
  `density.draw(batch, process, device) -> (t, w)`: w (batch,) are the importance weights that keep
      the weighted loss an unbiased estimate of the objective the density stands for, or None when
      every weight is 1 (the fixed densities: they *define* the objective);
  `density.observe(t, loss)`: the per-sample (unweighted, detached) training losses at the drawn t,
      after each training step; a no-op for the fixed densities.

`needs_logsnr` declares that a density maps through the schedule's log-SNR inverse (build.py
checks it against `schedule.has_logsnr`).
"""

import math

import torch
import torch.distributed as dist
from torch import Tensor, nn


class UniformTime:
    needs_logsnr = False

    def __init__(self, t_min: float = 1e-4):
        if not 0 <= t_min < 1:
            raise ValueError(f"objective.time.t_min must lie in [0, 1), got {t_min}")
        self.t_min = float(t_min)

    def _to_range(self, u: Tensor) -> Tensor:
        return self.t_min + (1 - self.t_min) * u

    def __call__(self, batch: int, process, device) -> Tensor:
        return self._to_range(torch.rand(batch, device=device))

    def draw(self, batch: int, process, device) -> tuple[Tensor, Tensor | None]:
        """t and its importance weights: None, every weight is 1 (this density is the objective's)."""
        return self(batch, process, device), None

    def observe(self, t: Tensor, loss: Tensor) -> None:
        """A fixed density learns nothing from the losses."""


class Stratified(UniformTime):
    def __call__(self, batch: int, process, device) -> Tensor:
        strata = torch.randperm(batch, device=device)
        return self._to_range((strata + torch.rand(batch, device=device)) / batch)


class LogNormal(UniformTime):
    needs_logsnr = True

    def __init__(self, p_mean: float = -1.2, p_std: float = 1.2, t_min: float = 1e-4):
        super().__init__(t_min)
        self.p_mean, self.p_std = float(p_mean), float(p_std)

    def __call__(self, batch: int, process, device) -> Tensor:
        log_ratio = self.p_mean + self.p_std * torch.randn(batch, device=device)  # log(σ/α)
        t = process.t_from_logsnr(-2 * log_ratio)
        return t.nan_to_num(1.0).clamp(self.t_min, 1.0)

    def density_at(self, logsnr: Tensor) -> Tensor:
        """p(λ) of this density, for tests and plots."""
        x = -logsnr / 2
        return torch.exp(-0.5 * ((x - self.p_mean) / self.p_std) ** 2) / (
            2 * self.p_std * math.sqrt(2 * math.pi)
        )


class ImportanceTime(nn.Module):
    """Importance sampling of t for the uniform-t objective (Nichol & Dhariwal 2021, §3.3, eq. 18):

        p_k ∝ sqrt(E[L_k²]),   L_uniform = E_{t~p}[ w(t) L(t) ],   w = q_k / p_k,  q_k = 1/K.

    [t_min, 1] is cut into K equal bins; a ring buffer keeps the last H per-sample losses of each
    bin. Until every bin holds H losses (warm-up) the bins are drawn uniformly (every w = 1); after,
    p = (1 − ε)·rms/Σrms + ε/K with rms_k = sqrt(mean of bin k's buffer) and ε = `uniform_floor`
    (improved DDPM's 1e-3), so no bin starves and w ≤ 1/ε. t is uniform within the drawn bin, so
    Σ_k p_k · (q_k/p_k) · E[L | bin k] = E_{t~U[t_min,1]}[L]: the weighted loss is unbiased for the
    uniform-t objective whatever the buffers hold (they only change its variance).

    The buffers (`losses` (K, H), `counts` (K,) losses ever written per bin) are nn.Module buffers:
    they live in the checkpoint's state_dict, so a resumed run draws exactly what the uninterrupted
    one would. Draws come from the global torch RNG (seeded per step by the module). Under DDP the
    ranks' (bin, loss) pairs are all-gathered in rank order before each update, so every rank
    keeps the same history (that of the global batch) and draws its own t from the same p; the
    checkpoint's copy (rank 0's) is therefore every rank's, and a resumed DDP run stays exact.
    `observe` is then a collective: every rank calls it once per training micro-batch (as
    `Objective.forward` does in training mode).
    """

    needs_logsnr = False

    def __init__(
        self,
        num_bins: int = 64,
        history: int = 10,
        uniform_floor: float = 1e-3,
        t_min: float = 1e-4,
    ):
        super().__init__()
        if not 0 <= t_min < 1:
            raise ValueError(f"objective.time.t_min must lie in [0, 1), got {t_min}")
        if num_bins < 1 or history < 1:
            raise ValueError(
                f"objective.time.num_bins and history must be >= 1, got {num_bins} and {history}"
            )
        if not 0 < uniform_floor <= 1:
            raise ValueError(
                f"objective.time.uniform_floor must lie in (0, 1], got {uniform_floor}"
            )
        self.t_min, self.num_bins, self.history = float(t_min), int(num_bins), int(history)
        self.uniform_floor = float(uniform_floor)
        self.register_buffer("losses", torch.zeros(self.num_bins, self.history))
        self.register_buffer("counts", torch.zeros(self.num_bins, dtype=torch.long))

    def probabilities(self) -> Tensor:
        """p (K,): uniform during warm-up, else the floor-mixed ∝ sqrt(mean L²) of each bin."""
        k = self.num_bins
        uniform = torch.full((k,), 1.0 / k, dtype=self.losses.dtype, device=self.losses.device)
        rms = self.losses.square().mean(1).sqrt()
        total = rms.sum()
        mixed = (1 - self.uniform_floor) * rms / total.clamp_min(1e-30) + self.uniform_floor / k
        warm = (self.counts >= self.history).all() & (total > 0)
        return torch.where(warm, mixed, uniform)

    def bin_of(self, t: Tensor) -> Tensor:
        """The bin index (long) of each t."""
        u = (t - self.t_min) / (1 - self.t_min)
        return (u * self.num_bins).floor().long().clamp(0, self.num_bins - 1)

    def forward(self, batch: int, process, device) -> tuple[Tensor, Tensor]:
        """(t, w): a bin k ~ p, t uniform in it, w = (1/K)/p_k."""
        p = self.probabilities().to(device)
        bins = torch.multinomial(p, batch, replacement=True)
        u = (bins + torch.rand(batch, device=device)) / self.num_bins
        t = (self.t_min + (1 - self.t_min) * u).clamp(max=1.0)
        return t, (1.0 / self.num_bins) / p[bins]

    draw = forward

    @torch.no_grad()
    def observe(self, t: Tensor, loss: Tensor) -> None:
        """Write each finite loss into its bin's ring buffer (in batch order; at most the last H of
        a bin per call, since earlier ones would be overwritten within the call anyway)."""
        bins, loss = _all_ranks(
            self.bin_of(t.to(self.losses.device)), loss.detach().to(self.losses)
        )
        finite = torch.isfinite(loss)  # a NaN step is skipped by the guard; keep it out of p too
        bins, loss = bins[finite], loss[finite]
        order = torch.argsort(bins, stable=True)
        bins, loss = bins[order], loss[order]
        n = torch.bincount(bins, minlength=self.num_bins)
        rank = torch.arange(bins.numel(), device=bins.device) - (n.cumsum(0) - n)[bins]
        keep = rank >= n[bins] - self.history
        slot = (self.counts[bins] + rank) % self.history
        self.losses[bins[keep], slot[keep]] = loss[keep]
        self.counts += n


def _all_ranks(bins: Tensor, loss: Tensor) -> tuple[Tensor, Tensor]:
    """Every rank's (bins, loss), concatenated in rank order (unchanged outside DDP). Batches of
    unequal size are padded with NaN losses, which `observe` drops as non-finite."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return bins, loss
    world = dist.get_world_size()
    sizes = [torch.zeros(1, dtype=torch.long, device=bins.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([bins.numel()], device=bins.device))
    pad = int(max(sizes).item()) - bins.numel()
    bins = torch.cat([bins, bins.new_zeros(pad)])
    loss = torch.cat([loss, loss.new_full((pad,), float("nan"))])
    all_bins = [torch.empty_like(bins) for _ in range(world)]
    all_loss = [torch.empty_like(loss) for _ in range(world)]
    dist.all_gather(all_bins, bins)
    dist.all_gather(all_loss, loss)
    return torch.cat(all_bins), torch.cat(all_loss)
