"""Plain values a user types, checked once by kind: the same rules for train, sample and evaluate.

A value from the command line arrives as whatever YAML made of it (`num_steps=1e8` is a float,
`lr=inf` is a float, `seed=-1` an int), so every kind states its type and its range, and the error
names the key, the value and what would be valid. Group-specific values (softness, schedule ranges,
image size vs the U-Net's downsampling...) are checked by their own classes at build time.
"""

from __future__ import annotations

import math

from omegaconf import OmegaConf

# A sampler's grid and its trajectory grow with the step count; 1000-step DDPM is the field's
# largest common choice, so 10^4 leaves room without letting a typo allocate without bound.
MAX_NUM_STEPS = 10_000
# Samples are generated and saved as one tensor (batched streaming to disk is not built yet).
MAX_NUM_SAMPLES = 50_000


class ConfigError(ValueError):
    """Two config groups (or a group and a value) that cannot work together."""


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _real(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


KINDS = {  # kind: (test, what a valid value is)
    "steps": (lambda v: _int(v) and 1 <= v <= MAX_NUM_STEPS, f"an integer in [1, {MAX_NUM_STEPS}]"),
    "steps_or_null": (
        lambda v: v is None or (_int(v) and 1 <= v <= MAX_NUM_STEPS),
        f"an integer in [1, {MAX_NUM_STEPS}], or null for the sampler's own",
    ),
    "samples": (
        lambda v: _int(v) and 1 <= v <= MAX_NUM_SAMPLES,
        f"an integer in [1, {MAX_NUM_SAMPLES}]",
    ),
    "count": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "count0": (lambda v: _int(v) and v >= 0, "an integer >= 0"),
    "seed": (lambda v: _int(v) and 0 <= v < 2**32, "an integer in [0, 2^32)"),
    "positive": (lambda v: _real(v) and v > 0, "a finite number > 0"),
    "positive_or_null": (
        lambda v: v is None or (_real(v) and v > 0),
        "a finite number > 0, or null",
    ),
    "probability_or_null": (
        lambda v: v is None or (_real(v) and 0 <= v < 1),
        "a probability in [0, 1), or null",
    ),
    "level": (lambda v: _real(v) and 0 < v <= 1, "a degradation level t in (0, 1]"),
    "guidance": (lambda v: _real(v) and v >= 0, "a number >= 0 (0 unconditional, 1 conditional)"),
    "unit": (lambda v: _real(v) and 0 <= v <= 1, "a number in [0, 1]"),
}

# What every train run has (keys absent from a config are skipped).
TRAIN_KEYS = (
    ("seed", "seed"),
    ("sampler.num_steps", "steps"),
    ("dataset.batch_size", "count"),
    ("optim.optimizer.lr", "positive"),
    ("optim.lr_warmup_steps", "count0"),
    ("trainer.max_steps", "count"),
    ("ema.half_life_images", "positive"),
    ("ema.rampup_ratio", "positive_or_null"),
    ("val_num_t", "count"),
    ("num_samples", "samples"),
    ("callbacks.sample_grid.num_samples", "samples"),
    ("evaluation.num_samples", "samples"),
    ("evaluation.batch_size", "count"),
    ("evaluation.nll.vlb_steps", "steps"),
    ("evaluation.nll.num_images", "count"),
    ("label_dropout", "probability_or_null"),
    ("latent_scale", "positive_or_null"),
)
# What evaluate.py reads besides its samplers × num_steps lists (checked one by one).
EVALUATE_KEYS = (
    ("seed", "seed"),
    ("evaluation.num_samples", "samples"),
    ("evaluation.batch_size", "count"),
    ("evaluation.nll.vlb_steps", "steps"),
    ("evaluation.nll.num_images", "count"),
)


def check_value(key: str, value, kind: str) -> None:
    """Raise ConfigError unless `value` (of config key `key`) is a valid `kind`."""
    valid, what = KINDS[kind]
    if not valid(value):
        raise ConfigError(f"{key}={value} is not valid: it must be {what}.")


def check_values(cfg, keys) -> None:
    """check_value for each (key, kind) in `keys` that `cfg` has; a list value checks each item."""
    for key, kind in keys:
        value = OmegaConf.select(cfg, key, default="<absent>")
        if value == "<absent>":
            continue
        value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        for item in value if isinstance(value, list) else [value]:
            check_value(key, item, kind)
