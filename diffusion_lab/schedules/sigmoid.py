"""Sigmoid schedule (Chen 2023, "On the importance of noise scheduling", Alg. 1).

    v(u) = sigmoid(u / τ),   ᾱ(t) = (v(end) − v(start + t (end − start))) / (v(end) − v(start)),
    clipped to [clip_min, 1];   λ(t) = log(ᾱ / (1 − ᾱ)).

Pinned: "sigmoid" here is Chen's signal-variance curve with start = −3, end = 3, τ = 1, not
Kingma et al.'s sigmoid-of-a-linear-λ. ᾱ(0) = 1 (clean), ᾱ(1) = clip_min (λ(1) ≈ −20.7).
"""

import math

import torch
from torch import Tensor

from diffusion_lab.schedules.base import LogSNRSchedule


class Sigmoid(LogSNRSchedule):
    def __init__(
        self, start: float = -3.0, end: float = 3.0, tau: float = 1.0, clip_min: float = 1e-9
    ):
        super().__init__()
        if not start < end or tau <= 0:
            raise ValueError(f"schedule needs start < end and tau > 0, got {start}, {end}, {tau}")
        self.start, self.end, self.tau, self.clip_min = (
            float(start),
            float(end),
            float(tau),
            clip_min,
        )
        self._v_start = 1 / (1 + math.exp(-start / tau))
        self._v_end = 1 / (1 + math.exp(-end / tau))

    def _alpha_bar(self, t: Tensor) -> Tensor:
        v = torch.sigmoid((self.start + t * (self.end - self.start)) / self.tau)
        return ((self._v_end - v) / (self._v_end - self._v_start)).clamp(self.clip_min, 1.0)

    def logsnr(self, t: Tensor) -> Tensor:
        a = self._alpha_bar(t.double())
        return (torch.log(a) - torch.log1p(-a)).to(t.dtype)

    def t_from_logsnr(self, logsnr: Tensor) -> Tensor:
        a = torch.sigmoid(logsnr.double())
        v = self._v_end - a * (self._v_end - self._v_start)
        u = self.tau * torch.logit(v)
        return ((u - self.start) / (self.end - self.start)).clamp(0, 1).to(logsnr.dtype)
