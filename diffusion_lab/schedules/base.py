"""The interface of a log-SNR schedule."""

from torch import Tensor


class LogSNRSchedule:
    """λ(t) = log(α(t)²/σ(t)²), strictly decreasing in t, with inverse t(λ). Shapes: (B,) → (B,)."""

    def logsnr(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def t_from_logsnr(self, logsnr: Tensor) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"
