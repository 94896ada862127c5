"""Helpers shared by the samplers: the step loop, per-step states and seeded noise.

`Loop` carries what every sampler hands its step loop unchanged (the denoiser, process, grid and
the call's plumbing: cond, generator, callback, progress), so the loops take (loop, x, ...) and
every sampler's own arguments are only its knobs.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from diffusion_lab.process import State, expand_t
from diffusion_lab.seeds import IndexGenerators


def steps(process, num_steps: int, grid, x: Tensor, progress: bool, desc: str):
    """Yield (i, t, t_next) over the grid, optionally with a progress bar."""
    if num_steps < 1:
        raise ValueError(f"sampler.num_steps must be >= 1, got {num_steps}")
    # float32 (also for half-precision x), float64 for double x
    ts = grid(process, num_steps).to(
        device=x.device, dtype=torch.promote_types(x.dtype, torch.float32)
    )
    pairs = list(zip(ts[:-1], ts[1:]))
    for i, (t, t_next) in enumerate(tqdm(pairs, desc=desc, disable=not progress, leave=False)):
        yield i, t, t_next


def state_at(process, t: Tensor, x: Tensor) -> State:
    return process.state(expand_t(t, x.shape[0], x.device))


def randn_like(x: Tensor, generator: torch.Generator | IndexGenerators | None) -> Tensor:
    """Standard normal noise shaped like x, drawn from `generator` on its own device; with
    IndexGenerators (diffusion_lab/seeds.py) each sample's row from its own index stream."""
    if isinstance(generator, IndexGenerators):
        return generator.randn(x.shape, dtype=x.dtype).to(x.device)
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def report(callback, x: Tensor, i: int, t: Tensor, denoised: Tensor) -> None:
    if callback is not None:
        callback({"x": x, "i": i, "t": t, "denoised": denoised})


def divide(num: Tensor, den: Tensor) -> Tensor:
    """num / den where den > 0, else 0: components with σ = 0 are clean and carry no noise."""
    return torch.where(
        den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(num)
    )


@dataclass(frozen=True)
class Loop:
    denoiser: Callable  # D(x, state, cond) -> x0_hat
    process: object  # ForwardProcess
    num_steps: int
    grid: Callable  # grid(process, num_steps) -> (N + 1,) times
    name: str  # progress-bar label
    cond: Tensor | None = None
    generator: torch.Generator | IndexGenerators | None = None
    callback: Callable | None = None
    progress: bool = False

    def steps(self, x: Tensor):
        """(i, t, t_next) over the grid."""
        return steps(self.process, self.num_steps, self.grid, x, self.progress, self.name)

    def state(self, t: Tensor, x: Tensor) -> State:
        return state_at(self.process, t, x)

    def target(self, t_next: Tensor, x: Tensor) -> State:
        """The state a step lands on. The grid's last point, t = 0, is clean data (α = 1, σ = 0)
        even where the schedule is truncated (σ(0) > 0, e.g. cosine with a finite logsnr_max):
        the last step is a full denoise, never a step that stops at σ(0)."""
        state = state_at(self.process, t_next, x)
        if float(t_next) == 0:
            state.alpha, state.sigma = torch.ones_like(state.alpha), torch.zeros_like(state.sigma)
        return state

    def denoise(self, x: Tensor, state: State) -> Tensor:
        return self.denoiser(x, state, self.cond)

    def noise(self, like: Tensor) -> Tensor:
        return randn_like(like, self.generator)

    def report(self, x: Tensor, i: int, t: Tensor, denoised: Tensor) -> None:
        report(self.callback, x, i, t, denoised)
