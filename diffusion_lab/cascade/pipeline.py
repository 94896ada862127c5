"""Coarse-to-fine sampling through a cascade (Cascaded Diffusion, Ho et al. 2021, §3, Fig. 2):

    x⁰ ~ p_base(x)                                   the base model (its output is the preview)
    xᵏ ~ p_k(x | cond_k(x^{k−1}, s_k)),  k = 1..K    super-resolution stages, s_k = aug_sample

Each stage is a trained DiffusionModule (EMA weights, its own process and sampler; a latent base's
samples are decoded before the next stage sees them); a stage's
`lowres` (cascade/lowres.py) turns the previous output into its condition. The stages must chain:
stage k's low-resolution shape is stage k−1's output shape, checked before anything is sampled.

Randomness: stage k draws its prior and sampler noise from `seed + k` (diffusion_lab.sampling)
and its augmentation noise from `seed + AUG_SEED_STRIDE · (k + 1)`, so (seed, num_samples) fix
every stage's output.

Shapes: stage k's images are (N, *data_shape of stage k).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from diffusion_lab.sampling import generate_ema, require_finite_samples
from diffusion_lab.values import ConfigError

AUG_SEED_STRIDE = 7919


@dataclass
class CascadeResult:
    images: list[Tensor] = field(default_factory=list)  # one (N, ...) batch per stage
    nfe: list[int] = field(default_factory=list)  # network calls per stage
    seconds: list[float] = field(
        default_factory=list
    )  # wall time from the start to each stage's end

    @property
    def time_to_preview(self) -> float:
        return self.seconds[0]

    @property
    def total_seconds(self) -> float:
        return self.seconds[-1]


def check_chain(base, stages: Sequence, names: Sequence[str] | None = None) -> None:
    """Raise a one-line ConfigError unless each stage takes the previous stage's output shape."""
    names = list(names) if names is not None else [f"stage {k}" for k in range(len(stages) + 1)]
    if base.lowres is not None:
        raise ConfigError(
            f"{names[0]} is a super-resolution model (trained with lowres=...); the cascade's "
            "first checkpoint must be a base model trained without it"
        )
    shape = tuple(base.process.data_shape)
    for k, stage in enumerate(stages, start=1):
        if stage.lowres is None:
            raise ConfigError(
                f"{names[k]} is not a super-resolution model (it was trained without lowres=...); "
                "every superres checkpoint must be one"
            )
        if tuple(stage.lowres.low_shape) != shape:
            raise ConfigError(
                f"{names[k]} takes low-resolution images of shape {tuple(stage.lowres.low_shape)}, "
                f"but {names[k - 1]} generates {shape}: the stage after it needs lowres.low_size={shape[-1]}"
                + (f" on {shape[0]}-channel data" if shape[0] != stage.lowres.channels else "")
            )
        shape = tuple(stage.process.data_shape)


@torch.no_grad()
def sample_stage(
    module,
    x_prev: Tensor | None,
    num_samples: int,
    seed: int,
    k: int,
    sampler=None,
    level: float | None = None,
    progress: bool = False,
) -> tuple[Tensor, int]:
    """Stage k of a cascade: the base (k = 0, x_prev None) or a super-resolution stage conditioned
    on the previous stage's images `x_prev` at `level` (None: its aug_sample). Returns (x, nfe)."""
    cond = None
    if k > 0:
        lowres = module.lowres
        z = lowres.from_previous_stage(x_prev.float().cpu())
        gen = torch.Generator().manual_seed(seed + AUG_SEED_STRIDE * k)
        cond = lowres.sampling_condition(z, gen, level=level)
    x, nfe = generate_ema(
        module, num_samples, sampler=sampler, seed=seed + k, cond=cond, progress=progress
    )
    return require_finite_samples(x).float().cpu(), nfe  # a latent base comes decoded


def sample_cascade(
    base,
    stages: Sequence,
    num_samples: int,
    seed: int = 0,
    *,
    samplers: Sequence | None = None,
    aug_levels: Sequence[float | None] | None = None,
    on_stage: Callable[[int, Tensor, float], None] | None = None,
    progress: bool = False,
) -> CascadeResult:
    """Sample the base, then every super-resolution stage conditioned on the previous output.

    `samplers[k]` replaces stage k's own sampler (k = 0 the base; None keeps it);
    `aug_levels[k − 1]` replaces stage k's aug_sample. `on_stage(k, images, seconds)` is called
    as soon as stage k's images exist (k = 0: the preview). Returns the images, NFE and times."""
    check_chain(base, stages)
    modules = [base, *stages]
    samplers = list(samplers) if samplers is not None else [None] * len(modules)
    levels = [None, *(aug_levels if aug_levels is not None else [None] * len(stages))]
    result, start, x = CascadeResult(), time.perf_counter(), None
    for k, module in enumerate(modules):
        x, nfe = sample_stage(module, x, num_samples, seed, k, samplers[k], levels[k], progress)
        result.images.append(x)
        result.nfe.append(nfe)
        result.seconds.append(time.perf_counter() - start)
        if on_stage is not None:
            on_stage(k, x, result.seconds[-1])
    return result
