"""Rebuild a trained autoencoder (the latent-diffusion first stage) from its checkpoint.

The checkpoint is one written by `python train_ae.py` (diffusion_lab/cli/train_ae.py): a Lightning
checkpoint whose state_dict holds the AutoencoderModule's weights (`autoencoder.*`, plus the
discriminator's when one was trained) and whose stored config has an `autoencoder` node. It is
untrusted: `checkpoint.load_checkpoint` reads it with weights_only=True and refuses any `_target_`
the configs/ tree does not define for its group before anything is imported.
"""

from __future__ import annotations

from pathlib import Path

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from diffusion_lab.autoencoder.kl import KLAutoencoder
from diffusion_lab.checkpoint import CheckpointError, load_checkpoint, nonfinite_tensors

PREFIX = "autoencoder."
HINT = "pass latent=<outputs/train_ae/<run>/checkpoints/last.ckpt>"


def load_autoencoder(path: str | Path) -> tuple[KLAutoencoder, DictConfig]:
    """(autoencoder in eval mode with requires_grad False, stored run config). CheckpointError
    (one line) for a missing, foreign, non-autoencoder, mismatched or non-finite checkpoint."""
    cfg, state_dict, _ = load_checkpoint(path)
    node = cfg.get("autoencoder")
    if not isinstance(node, DictConfig) or "_target_" not in node:
        raise CheckpointError(
            f"{path} is a diffusion checkpoint, not an autoencoder one (its config has no "
            f"`autoencoder` node): {HINT}"
        )
    weights = {k[len(PREFIX) :]: v for k, v in state_dict.items() if k.startswith(PREFIX)}
    if not weights:
        raise CheckpointError(
            f"{path} holds no `{PREFIX}*` weights (a latent diffusion checkpoint is not an "
            f"autoencoder one): {HINT}"
        )
    bad = nonfinite_tensors(weights)
    if bad:
        raise CheckpointError(
            f"{path} holds non-finite autoencoder weights ({len(bad)} tensors with NaN/Inf, e.g. "
            f"{bad[0]}): the run diverged before this was written; use an earlier checkpoint."
        )
    try:
        model = instantiate(node)
    except (InstantiationException, TypeError, ValueError) as err:
        reason = " ".join(str(err).split())[:200]
        raise CheckpointError(
            f"the autoencoder config stored in {path} does not build ({reason}): the file is "
            "corrupt or was edited."
        ) from None
    if not isinstance(model, KLAutoencoder):  # the allowlist admits only configs/autoencoder/*
        raise CheckpointError(f"{path}: autoencoder._target_ builds a {type(model).__name__}")
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        first = next((ln.strip() for ln in str(err).splitlines()[1:] if ln.strip()), str(err))
        raise CheckpointError(
            f"checkpoint {path} does not fit the autoencoder its stored config builds "
            f"({first[:200]}): the config and the weights come from different runs."
        ) from None
    model.eval().requires_grad_(False)
    return model, cfg
