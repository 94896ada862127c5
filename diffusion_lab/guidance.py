"""Classifier-free guidance (Ho & Salimans 2022) as a denoiser wrapper, and label dropout.

    D_w(x; state, c) = D(x; state, ∅) + w · (D(x; state, c) − D(x; state, ∅))

in x0 space, where ∅ is the null label (index `num_classes` of the backbone's label embedding,
backbones/embedding.py). w = 0 is the unconditional model, w = 1 the conditional one, w > 1
extrapolates away from the unconditional prediction. Convention: Ho & Salimans write
ε̃ = (1 + w') ε(z, c) − w' ε(z) (§3.2, eq. 6), so their w' is w − 1 here; w here is the
"guidance scale" of Stable Diffusion / diffusers, Imagen and EDM2.

Equivalence to the ε form. Every preconditioning in this project (EDM generalised per component,
eps, v, x0) gives the noise prediction as an affine function of the x0 prediction with
coefficients that depend only on (x, state), per component in the basis: ε̂ = (U x − α ⊙ U D)/σ.
The conditional and unconditional predictions share x and state, so
    ε̂_w = (U x − α ⊙ U D_w)/σ = (1 − w) ε̂_u + w ε̂_c,
i.e. guiding D is exactly guiding ε (or v, or the score) with the same w; samplers see an
ordinary denoiser and need no change.

Guidance rescale (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed",
§3.4, eqs. 15-16): large w inflates the guided prediction's magnitude (over-exposed, saturated
images). With φ = `rescale`,
    D_r = D_w · std(D_c)/std(D_w)   (eq. 15),     D_out = φ D_r + (1 − φ) D_w   (eq. 16).
Adapted here: the paper states it for the network's raw output (a v-prediction in its setting);
we apply it to the x0 prediction D, in data (pixel) coordinates, with std over all non-batch
dimensions of each sample, as the paper does. In x0 space the std is directly the image's
contrast, so the rescale keeps each guided image's spread at the conditional model's. It is not
equivalent to rescaling ε (the std of an affine map of D is not the affine map of the std);
φ = 0 is a no-op, φ = 0.7 is the paper's recommendation at w = 7.5.

Cost. The two predictions are ONE network call on a doubled batch: x, every State field and the
labels [c, ∅] are concatenated along dim 0. State fields may be (B, 1, …, 1) (isotropic) or
(B, *data_shape) (per component); fields with a leading dimension of 1 broadcast over the batch
and are left as they are. `CountCalls` around a `Guided` counts network calls (each of a doubled
batch), not per-sample evaluations.

Shapes: x (B, *data_shape); cond (B,) long or None; returns x-shaped x0 predictions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from diffusion_lab.process import State


def null_label_of(denoiser: nn.Module) -> int:
    """The null label of a conditional denoiser: its backbone's (or embedding's) `num_classes`."""
    backbone = getattr(denoiser, "backbone", denoiser)
    for owner in (backbone, getattr(backbone, "embedding", None)):
        num_classes = getattr(owner, "num_classes", None)
        if isinstance(num_classes, int):
            return num_classes
    raise ValueError(
        "classifier-free guidance needs a class-conditional backbone (backbone.num_classes set); "
        f"{type(backbone).__name__} has no num_classes: pass null_label explicitly"
    )


def double_state(state: State, batch: int) -> State:
    """The state of a batch concatenated with itself: every per-sample field doubled along dim 0."""

    def double(value):
        if isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] == batch:
            return torch.cat([value, value])
        return value  # broadcasts over the batch (leading dim 1, scalars)

    return dataclasses.replace(
        state, **{f.name: double(getattr(state, f.name)) for f in dataclasses.fields(state)}
    )


def rescale_guidance(guided: Tensor, conditional: Tensor, phi: float) -> Tensor:
    """Lin et al. 2024 eqs. 15-16 in x0 space: move each sample's std toward the conditional one."""
    if phi == 0:
        return guided
    dims = tuple(range(1, guided.ndim))
    std_c = conditional.std(dim=dims, keepdim=True)
    std_w = guided.std(dim=dims, keepdim=True).clamp(min=1e-12)
    return phi * guided * (std_c / std_w) + (1 - phi) * guided


class Guided(nn.Module):
    """A denoiser with classifier-free guidance: `Guided(denoiser, w)(x, state, cond)`.

    cond None: a plain unconditional call. w = 1 (or w = 0 without rescale) needs only one of the
    two predictions and makes a single call of the undoubled batch."""

    def __init__(
        self,
        denoiser: nn.Module,
        scale: float,
        rescale: float = 0.0,
        null_label: int | None = None,
    ):
        super().__init__()
        if not 0 <= rescale <= 1:
            raise ValueError(f"guidance_rescale must lie in [0, 1], got {rescale}")
        self.denoiser, self.scale, self.rescale = denoiser, float(scale), float(rescale)
        self.null_label = null_label_of(denoiser) if null_label is None else int(null_label)

    def forward(self, x: Tensor, state: State, cond: Tensor | None = None) -> Tensor:
        if cond is None or self.scale == 1:
            return self.denoiser(x, state, cond)
        null = torch.full_like(cond, self.null_label)
        if self.scale == 0 and self.rescale == 0:
            return self.denoiser(x, state, null)
        batch = x.shape[0]
        both = self.denoiser(torch.cat([x, x]), double_state(state, batch), torch.cat([cond, null]))
        conditional, unconditional = both[:batch], both[batch:]
        guided = unconditional + self.scale * (conditional - unconditional)
        return rescale_guidance(guided, conditional, self.rescale)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, rescale={self.rescale}, null_label={self.null_label}"


def drop_labels(y: Tensor, p: float, null_label: int, generator: torch.Generator) -> Tensor:
    """Label dropout for classifier-free guidance: each label becomes the null label with
    probability p (Ho & Salimans 2022, Alg. 1, p_uncond), drawn on the CPU from `generator`
    (so the mask is the same on every device for the same seed)."""
    if p <= 0:
        return y
    drop = torch.rand(y.shape, generator=generator) < p
    return torch.where(drop.to(y.device), torch.full_like(y, null_label), y)


def spread_labels(spec, num_samples: int, num_classes: int) -> Tensor:
    """The (num_samples,) labels a user asked for: an int (every sample that class), a list
    (num_samples split into equal consecutive blocks, one per listed label, in order) or "all"
    (the list 0..num_classes-1). Raises ValueError naming `class_label` for anything else."""
    if isinstance(spec, str) and spec.strip().lower() == "all":
        spec = list(range(num_classes))
    labels = list(spec) if isinstance(spec, Sequence) and not isinstance(spec, str) else [spec]
    valid = [
        isinstance(k, int) and not isinstance(k, bool) and 0 <= k < num_classes for k in labels
    ]
    if not labels or not all(valid):
        raise ValueError(
            f"class_label={spec} is not valid: give a class in 0..{num_classes - 1}, a list of "
            "them, or `all` (num_samples spread over the classes)"
        )
    block = torch.arange(num_samples) * len(labels) // num_samples
    return torch.tensor(labels, dtype=torch.long)[block]
