"""Drawing samples: prior → sampler, with the NFE count and classifier-free guidance (DESIGN §2).

    generate(denoiser, process, sampler, num_samples, ...)  the one sampling entry point
    generate_ema(module, num_samples, ...)                  the same with a trained DiffusionModule's
                                                            EMA denoiser, process and sampler

Used alike by the CLIs (sample.py, evaluate.py), the callbacks (sample grids, metrics) and scripts;
the LightningModule itself only trains. Samplers are the pure functions of diffusion_lab/samplers.
Randomness: one CPU generator seeded with `seed` draws the prior and is then handed to the
sampler, so a (seed, sampler, num_samples) triple gives the same samples on every device. With
`indices` each sample draws from its own stream seeded by (seed, index) (diffusion_lab/seeds.py):
sample i is then the same whatever the batch it is drawn in, which is what batched, resumed and
multi-device sampling (diffusion_lab/streaming.py, sample.py, evaluate.py) rely on.

Shapes: x_T and the samples are (N, *data_shape); cond (N,) class labels, (N, ...) float images
(a super-resolution stage's condition, diffusion_lab/cascade/) or None.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from diffusion_lab.cascade.lowres import validation_condition
from diffusion_lab.guidance import Guided
from diffusion_lab.seeds import IndexGenerators


class CountCalls(nn.Module):
    """Wraps a denoiser and counts its calls (the number of function evaluations, NFE)."""

    def __init__(self, denoiser: nn.Module):
        super().__init__()
        self.denoiser, self.nfe = denoiser, 0

    def forward(self, x, state, cond=None):
        self.nfe += 1
        return self.denoiser(x, state, cond)


def require_finite_samples(x: Tensor) -> Tensor:
    """`x` (N, ...) if every sample is finite; else a FloatingPointError saying how many are not
    (sample.py and the quality metrics refuse to save or score NaN images)."""
    bad = int((~torch.isfinite(x)).flatten(1).any(1).sum())
    if bad:
        raise FloatingPointError(
            f"{bad} of {len(x)} samples hold NaN/Inf: the sampler diverged (try another sampler "
            "or more steps) or the weights are broken; nothing was saved or scored"
        )
    return x


def degraded_validation_images(datamodule, process, num_samples: int, seed: int = 0) -> Tensor:
    """The first `num_samples` validation images (cycled), corrupted to t = 1 with seeded noise:
    what a restoration-only process (no prior, e.g. snow) starts from in grids and train.py."""
    datamodule.setup("validate")
    data = datamodule.val_set
    x0 = torch.stack([data[i % len(data)][0] for i in range(num_samples)])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    return process.sample(x0, torch.ones(num_samples), noise)[0]


@torch.no_grad()
def generate(
    denoiser: nn.Module,
    process,
    sampler,
    num_samples: int,
    *,
    seed: int = 0,
    x_T: Tensor | None = None,
    cond: Tensor | None = None,
    guidance: float = 1.0,
    guidance_rescale: float = 0.0,
    null_label: int | None = None,
    progress: bool = False,
    indices=None,
) -> tuple[Tensor, int]:
    """Draw `num_samples` samples from the prior (or from `x_T`). Returns (x, nfe).

    With `cond` and `guidance` w != 1 the denoiser is wrapped in classifier-free guidance
    (diffusion_lab/guidance.py), D_u + w (D_c − D_u), rescaled by `guidance_rescale` φ, with
    `null_label` the unconditional label. nfe counts network calls: a guided call evaluates the
    network once on a doubled batch and counts once. Runs on the denoiser's device (CPU for
    one without parameters). `indices` (num_samples sample indices): per-index seeds."""
    params = getattr(denoiser, "parameters", None)  # an exact (parameter-free) denoiser, or an
    weight = next(params(), None) if params else None  # onnxruntime one, runs on the CPU
    device = weight.device if weight is not None else torch.device("cpu")
    if indices is None:
        gen = torch.Generator(device="cpu").manual_seed(seed)
    else:
        gen = IndexGenerators(seed, indices)
        if len(gen) != num_samples:
            raise ValueError(f"{len(gen)} indices given for {num_samples} samples")
    if x_T is None:
        if not process.has_prior:
            raise NotImplementedError(
                "this degradation has no prior to sample from: restore your own image with "
                "`python sample.py ckpt_path=... init_image=PATH start_t=T`"
            )
        if indices is None:
            x_T = process.prior(num_samples, device="cpu", generator=gen)
        else:
            x_T = gen.prior(process)
    x = x_T.to(device)
    if cond is not None and torch.is_floating_point(torch.as_tensor(cond)):  # an image condition
        if guidance != 1:
            raise ValueError("guidance needs class labels; an image condition takes guidance=1")
        cond = torch.as_tensor(cond, device=device)
        if cond.shape[0] != len(x):
            raise ValueError(f"cond must hold {len(x)} images, got shape {tuple(cond.shape)}")
    elif cond is not None:
        cond = torch.as_tensor(cond, dtype=torch.long, device=device)
        if cond.shape != x.shape[:1]:
            raise ValueError(f"cond must have shape ({len(x)},), got {tuple(cond.shape)}")
        if guidance != 1:  # w = 1 is the conditional model itself (rescale: a no-op)
            denoiser = Guided(denoiser, guidance, guidance_rescale, null_label=null_label)
    counted = CountCalls(denoiser)
    out = sampler(counted, process, x, cond=cond, generator=gen, progress=progress)
    return out, counted.nfe


def generate_ema(
    module,
    num_samples: int,
    *,
    sampler=None,
    cond: Tensor | None = None,
    datamodule=None,
    denoiser=None,
    **kwargs,
):
    """`generate` with a DiffusionModule's EMA denoiser and process, and its own sampler unless
    `sampler` is given; `denoiser` replaces the EMA weights (an exported graph of them run by
    ONNX Runtime, diffusion_lab/deploy/runtime.py). Refuses class labels for a model trained without them. A process without
    a prior (snow) restores `datamodule`'s validation images degraded to t = 1 when no x_T is
    given. A latent model's samples are decoded into images. Returns (x, nfe)."""
    if cond is None and module.lowres is not None:  # a super-resolution stage, outside a cascade
        if datamodule is None:
            raise ValueError(
                "a super-resolution model (trained with lowres=...) samples conditioned on "
                "low-resolution images: python sample.py ckpt_path=<base> superres=[<it>]"
            )
        cond = validation_condition(module.lowres, datamodule, num_samples, kwargs.get("seed", 0))
    elif cond is not None and module.lowres is None and not module.class_conditional:
        raise ValueError(
            "class labels were given, but this model was trained unconditionally "
            "(conditional=false): leave class_label unset"
        )
    if kwargs.get("x_T") is None and not module.process.has_prior and datamodule is not None:
        seed = kwargs.get("seed", 0)
        kwargs["x_T"] = degraded_validation_images(datamodule, module.process, num_samples, seed)
    x, nfe = generate(
        module.ema if denoiser is None else denoiser,
        module.process,
        sampler or module.sampler,
        num_samples,
        cond=cond,
        null_label=module.num_classes,
        **kwargs,
    )
    return module.decode(x), nfe
