"""The schedule interfaces: one base per kind, with the capabilities callers read as flags.

    Schedule        t ∈ [0, 1] → a corruption level; `setup(degradation, statistics)` fits
                    data-dependent parts (BlurW2's table) into buffers, so they travel with the
                    checkpoint and a restored model never refits them.
    LogSNRSchedule  λ(t) = log(α(t)²/σ(t)²), strictly decreasing in t, with inverse t(λ)
                    (has_logsnr = True: log-SNR grids and log-normal time densities apply).
    BlurSchedule    σ_B(t), the blur kernel's std in pixels (schedules/blur.py).

Flags, read by build.py and the samplers instead of probing with hasattr:
    has_logsnr        logsnr(t) and t_from_logsnr(λ) exist
    needs_statistics  setup() needs dataset statistics

Shapes: t (B,) → (B,).
"""

from torch import Tensor, nn


class Schedule(nn.Module):
    has_logsnr = False
    needs_statistics = False

    def setup(self, degradation, statistics) -> None:
        """Fit data-dependent parts. `statistics` None: they come from a checkpoint. Default: nothing."""

    def extra_repr(self) -> str:
        return ", ".join(
            f"{k}={v}" for k, v in vars(self).items() if not k.startswith("_") and k != "training"
        )


class LogSNRSchedule(Schedule):
    """λ(t) = log(α(t)²/σ(t)²), strictly decreasing in t, with inverse t(λ)."""

    has_logsnr = True

    def logsnr(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def t_from_logsnr(self, logsnr: Tensor) -> Tensor:
        raise NotImplementedError
