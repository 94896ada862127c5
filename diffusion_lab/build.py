"""The one place that wires instantiated config groups together and checks that they fit.

`build(cfg)` instantiates dataset, degradation ∘ schedule, backbone + precond, objective and sampler,
and raises a `ConfigError` naming both config groups when two choices cannot work together.
`build_module(cfg, parts)` adds the training concerns (optimizer, EMA) as a DiffusionModule.
`module_from_checkpoint(path)` rebuilds a trained one: the same build, with the fitted buffers
(bases, priors, tabulated schedules) taken from the checkpoint instead of computed from data.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import partial

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from diffusion_lab.cascade.wiring import lowres_condition, superres_backbone
from diffusion_lab.checkpoint import (
    CheckpointError,
    adopt_fitted_shapes,
    load_checkpoint,
    nonfinite_tensors,
)
from diffusion_lab.data.statistics import DatasetStatistics, load_or_compute
from diffusion_lab.denoiser import Denoiser
from diffusion_lab.groups import choice
from diffusion_lab.groups import instantiate_group as _instantiate
from diffusion_lab.latent.wiring import latent_data
from diffusion_lab.module import DiffusionModule
from diffusion_lab.process import ForwardProcess
from diffusion_lab.samplers.pf_ode import check_churn
from diffusion_lab.values import TRAIN_KEYS, ConfigError, check_values

__all__ = [
    "ConfigError",
    "Parts",
    "build",
    "build_module",
    "check_sampler",
    "choice",
    "module_from_checkpoint",
]


@dataclass
class Parts:
    datamodule: object
    process: ForwardProcess
    denoiser: Denoiser
    objective: nn.Module
    sampler: partial
    statistics: object = None  # DatasetStatistics when the process needed them
    codec: object = None  # latent.LatentCodec of a latent-diffusion run (latent=PATH), else None
    lowres: object = None  # cascade.LowResCondition of a super-resolution stage, else None


def _check_schedule(cfg, degradation, schedule) -> None:
    wanted = degradation.schedule_type
    if wanted is not None and not isinstance(schedule, wanted):
        raise ConfigError(
            f"{choice(cfg, 'degradation')} needs a {wanted.__name__}; {choice(cfg, 'schedule')} is a "
            f"{type(schedule).__name__}. Pick a schedule made for this degradation (see README, config groups)."
        )


def _check_backbone(cfg, data_shape) -> None:
    ndim = getattr(get_class(cfg.backbone._target_), "data_ndim", None)
    if ndim is not None and ndim != len(data_shape):
        kind = {1: "flat vectors (B, D)", 3: "images (B, C, H, W)"}
        raise ConfigError(
            f"{choice(cfg, 'backbone')} takes {kind.get(ndim, f'{ndim}-d data')}; {choice(cfg, 'dataset')} "
            f"gives data of shape {tuple(data_shape)}. Use backbone=mlp for 2-D toy data, backbone=unet for images."
        )


# What a sampler's `requires` flag asks of the process, and what to do instead.
REQUIREMENTS = {
    "linear": (
        "a linear degradation (x_t = Uᵀ(α ⊙ U x0 + σ ⊙ z))",
        " Cold Diffusion operators sample with sampler=cold or sampler=cold_naive.",
    ),
    "isotropic": ("an isotropic degradation (one noise level per sample)", ""),
}


# Arguments the sampling loop passes itself; a config that sets one would collide at call time.
CALL_ARGUMENTS = ("denoiser", "process", "x", "cond", "generator", "callback", "progress")


def _check_keywords(cfg, group: str, fn, keywords: dict, reserved=()) -> None:
    """Every configured knob is a named parameter of the function (a stray `+sampler.x=` fails
    here, not at the first sample grid); the call's own arguments (`reserved`) are not knobs."""
    named = [
        name
        for name, p in inspect.signature(fn).parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name not in reserved
    ]
    for key in keywords:
        if key in reserved:
            reason = f"{key!r} is passed by the sampling loop, not set in a config"
        elif key == "num_steps" and key not in named:
            reason = (
                "chooses its own steps, so num_steps does not apply (drop it with "
                "~sampler.num_steps; debug=fast sets it)"
            )
        elif key not in named:
            reason = f"got an unexpected keyword argument {key!r}"
        else:
            continue
        raise ConfigError(f"{choice(cfg, group)}: {reason}; it takes {', '.join(named)}.")


def check_sampler(cfg, sampler, process) -> None:
    """The sampler's knobs exist, and the process has what the sampler and its grid need."""
    fn = sampler.func if isinstance(sampler, partial) else sampler
    _check_keywords(cfg, "sampler", fn, sampler.keywords, reserved=CALL_ARGUMENTS)
    grid = sampler.keywords.get("grid")
    if isinstance(grid, partial):
        _check_keywords(cfg, "sampler/grid", grid.func, grid.keywords, reserved=("process",))
    for flag in getattr(fn, "requires", ()):
        if not getattr(process, flag):
            needs, fix = REQUIREMENTS.get(flag, (f"a degradation with {flag}", ""))
            raise ConfigError(
                f"{choice(cfg, 'sampler')} needs {needs}; {choice(cfg, 'degradation')} is not one."
                f"{fix}"
            )
    if getattr(getattr(grid, "func", grid), "needs_logsnr", False) and not (
        process.schedule.has_logsnr
    ):
        raise ConfigError(
            f"{choice(cfg, 'sampler/grid')} spaces steps by log-SNR and needs a log-SNR schedule; "
            f"{choice(cfg, 'schedule')} is not one. Use sampler/grid=uniform."
        )
    if getattr(fn, "needs_logsnr", False) and not process.schedule.has_logsnr:
        raise ConfigError(
            f"{choice(cfg, 'sampler')} steps in log-SNR and needs a log-SNR schedule; "
            f"{choice(cfg, 'schedule')} is not one. Use a fixed-grid sampler such as sampler=ddim."
        )
    try:
        check_churn(process, sampler.keywords.get("s_churn", 0))
    except ValueError as err:
        raise ConfigError(f"{choice(cfg, 'sampler')} with {err}") from None


DEFAULT_LABEL_DROPOUT = 0.1  # Ho & Salimans 2022 train with p_uncond 0.1 or 0.2


def label_dropout(cfg: DictConfig) -> float:
    """The label-dropout probability a run trains with: `label_dropout`, where null (the default)
    means 0.1 for conditional=true (so the model can be sampled with guidance) and 0 otherwise."""
    value = cfg.get("label_dropout", None)
    if value is None:
        return DEFAULT_LABEL_DROPOUT if cfg.get("conditional", False) else 0.0
    return float(value)


def _check_conditioning(cfg, datamodule) -> None:
    if cfg.get("conditional", False):
        if not getattr(datamodule, "num_classes", None):
            raise ConfigError(
                f"conditional=true needs labelled data; {choice(cfg, 'dataset')} has no classes."
            )
        backbone_classes = OmegaConf.select(cfg, "backbone.num_classes")
        if not backbone_classes:
            raise ConfigError(
                f"conditional=true needs backbone.num_classes (set it to {datamodule.num_classes})."
            )
        if backbone_classes < datamodule.num_classes:
            raise ConfigError(
                f"backbone.num_classes={backbone_classes} is fewer than the "
                f"{datamodule.num_classes} classes of {choice(cfg, 'dataset')} (label "
                f"{backbone_classes} would be the null label): set backbone.num_classes="
                f"{datamodule.num_classes}."
            )
    elif label_dropout(cfg) > 0:
        raise ConfigError(
            f"label_dropout={cfg.label_dropout} drops class labels, but conditional=false trains "
            "without labels: set conditional=true (and backbone.num_classes), or label_dropout=0."
        )


def _check_time_density(cfg, objective, process) -> None:
    if objective.time.needs_logsnr and not process.schedule.has_logsnr:
        raise ConfigError(
            f"{choice(cfg, 'objective/time')} draws log(σ/α) and maps it through the schedule's "
            f"log-SNR inverse; {choice(cfg, 'schedule')} has none. Use objective/time=uniform."
        )


def _per_component_sigma_data(cfg, precond, process, statistics):
    """precond.per_component=true: σ_d per component of the process's basis, from the data (None
    when restoring: the checkpoint holds it)."""
    if not precond.per_component:
        return None
    if not process.linear:
        raise ConfigError(
            f"precond.per_component=true needs a degradation diagonal in a basis; "
            f"{choice(cfg, 'degradation')} is a Cold Diffusion operator. Set precond.per_component=false."
        )
    return statistics.component_rms(process.basis) if statistics is not None else None


def build(cfg: DictConfig, statistics=None, restore: bool = False) -> Parts:
    """Instantiate and check all groups. Dataset statistics are computed (or read from the cache)
    when the process or the preconditioning needs them, unless given as `statistics`; `restore`
    never touches the data and leaves the fitted buffers empty for a checkpoint to fill."""
    check_values(cfg, TRAIN_KEYS)
    datamodule = _instantiate(cfg, "dataset")
    _check_conditioning(cfg, datamodule)
    codec = None
    if cfg.get("latent") is not None or (restore and cfg.get("autoencoder") is not None):
        datamodule, codec = latent_data(cfg, datamodule, restore)
    degradation, schedule = _instantiate(cfg, "degradation"), _instantiate(cfg, "schedule")
    _check_schedule(cfg, degradation, schedule)
    process = ForwardProcess(degradation, schedule, datamodule.data_shape)
    precond = _instantiate(cfg, "precond")
    needed = process.needs_statistics or precond.per_component
    if needed and statistics is None and not restore:
        statistics = load_or_compute(datamodule, cfg.paths.cache_dir)
    process.setup(statistics)
    _check_backbone(cfg, process.data_shape)
    sigma_data = _per_component_sigma_data(cfg, precond, process, statistics)
    lowres = lowres_condition(cfg, process.data_shape, restore)
    backbone = superres_backbone(cfg, lowres) if lowres else _instantiate(cfg, "backbone")
    denoiser = Denoiser(backbone, precond, process.basis, sigma_data)
    sampler = _instantiate(cfg, "sampler")
    check_sampler(cfg, sampler, process)
    objective = _instantiate(cfg, "objective")
    _check_time_density(cfg, objective, process)
    return Parts(datamodule, process, denoiser, objective, sampler, statistics, codec, lowres)


def build_module(
    cfg: DictConfig, parts: Parts, module_class: type = DiffusionModule, **extra
) -> DiffusionModule:
    """`module_class` (a DiffusionModule subclass, e.g. distill.module.DistillModule) with its
    `extra` arguments, wired from `cfg` like the training module."""
    module = module_class(
        process=parts.process,
        denoiser=parts.denoiser,
        objective=parts.objective,
        sampler=parts.sampler,
        optimizer=instantiate(cfg.optim.optimizer),
        lr_warmup_steps=cfg.optim.lr_warmup_steps,
        ema_half_life_images=cfg.ema.half_life_images,
        ema_rampup_ratio=cfg.ema.rampup_ratio,
        val_num_t=cfg.val_num_t,
        seed=cfg.seed,
        class_conditional=bool(cfg.get("conditional", False)),
        num_classes=OmegaConf.select(cfg, "backbone.num_classes"),
        label_dropout=label_dropout(cfg),
        config=OmegaConf.to_container(cfg, resolve=True),
        codec=parts.codec,
        lowres=parts.lowres,
        **extra,
    )
    _speed_switches(cfg, module)
    return module


def _speed_switches(cfg: DictConfig, module: DiffusionModule) -> None:
    """`channels_last` and `compile`: backbone-only, so the diffusion math and checkpoints are
    untouched (nn.Module.compile compiles in place and keeps state_dict keys)."""
    shape = module.process.data_shape
    if cfg.get("channels_last") and len(shape) != 3:
        raise ConfigError(
            f"channels_last=true needs image data (C, H, W); {choice(cfg, 'dataset')} gives shape "
            f"{shape}. Set channels_last=false."
        )
    for denoiser in (module.denoiser, module.ema):
        if cfg.get("channels_last"):
            denoiser.backbone.to(memory_format=torch.channels_last)
        if cfg.get("compile"):
            denoiser.backbone.compile()


def _check_fitted_state(path, module) -> None:
    """The fitted buffers came from the file with whatever shapes it gave them: run the process
    once on a zero image (corrupt, denoise, draw the prior) so a mismatch fails here, in one line."""
    process = module.process
    x0 = torch.zeros(1, *process.data_shape)
    try:
        with torch.no_grad():
            x_t, _, state = process.sample(x0, torch.full((1,), 0.5))
            lowres = module.lowres  # a super-resolution stage takes the low-res x0 as cond
            cond = None if lowres is None else lowres.condition(lowres.downsample(x0), 0.0)
            module.ema(x_t, state, cond)
            if process.has_prior:
                process.prior(1, generator=torch.Generator().manual_seed(0))
            if module.codec is not None:  # the autoencoder's weights and the latent scale
                module.codec.decode(torch.zeros(1, *process.data_shape))
    except (RuntimeError, ValueError, IndexError) as err:
        reason = " ".join(str(err).split())[:200]
        raise CheckpointError(
            f"the fitted state in {path} (bases, priors, schedule tables) does not fit the model "
            f"its config builds ({reason}): the file is corrupt or was edited."
        ) from None


def module_from_checkpoint(
    path,
    sampler_cfg: DictConfig | None = None,
    paths: DictConfig | None = None,
    sampler_choice: str | None = None,
):
    """Rebuild the run's DiffusionModule (weights, EMA and fitted buffers loaded) from a checkpoint.

    `sampler_cfg` replaces the sampler the run was trained with (`sampler=NAME`); a node without
    `_target_` (`+sampler.eta=0.5` alone) changes the stored sampler's knobs instead;
    `sampler_choice` names the new one in errors. `paths` (this invocation's `paths` group)
    replaces the stored machine-local paths, so caches and data are read and written where the
    user running this says, never where the checkpoint's file says. Returns (module, parts, config).
    """
    cfg, state_dict, legacy_statistics = load_checkpoint(path)
    bad = nonfinite_tensors(state_dict)
    if bad:
        raise CheckpointError(
            f"{path} holds non-finite weights ({len(bad)} tensors with NaN/Inf, e.g. {bad[0]}): "
            "the run diverged before this was written. Use an earlier checkpoint of the run."
        )
    with open_dict(cfg):
        if sampler_cfg is not None and "_target_" not in sampler_cfg:
            cfg.sampler = OmegaConf.merge(cfg.sampler, sampler_cfg)
        elif sampler_cfg is not None:
            cfg.sampler = sampler_cfg
            cfg.choices = {**(cfg.get("choices") or {}), "sampler": sampler_choice or "?"}
        if paths is not None:
            cfg.paths = OmegaConf.to_container(paths, resolve=True)
            if OmegaConf.select(cfg, "dataset.data_dir") is not None:
                cfg.dataset.data_dir = cfg.paths.data_dir
    try:
        stats = DatasetStatistics.from_dict(legacy_statistics) if legacy_statistics else None
    except TypeError as err:
        raise CheckpointError(f"{path} has malformed dataset statistics ({err}).") from None
    try:
        parts = build(cfg, stats, restore=True)
    except (TypeError, AttributeError, RuntimeError, IndexError) as err:
        if stats is None:
            raise
        reason = " ".join(str(err).split())[:200]
        raise CheckpointError(f"{path} has malformed dataset statistics ({reason}).") from None
    module = build_module(cfg, parts)
    adopt_fitted_shapes(module, state_dict)
    try:
        missing, unexpected = module.load_state_dict(state_dict, strict=False)
    except RuntimeError as err:  # size mismatch
        first = next(
            (line.strip() for line in str(err).splitlines() if "size mismatch" in line), ""
        )
        raise CheckpointError(
            f"checkpoint {path} does not fit the model its stored config builds ({first[:200]}): "
            "the config and the weights come from different runs."
        ) from None
    if stats is not None:  # an older checkpoint: buffers added since were rebuilt from its data
        buffers = {name for name, _ in module.named_buffers()}
        missing = [key for key in missing if key not in buffers]
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not match the model its config builds "
            f"(missing {missing[:3]}..., unexpected {unexpected[:3]}...)."
        )
    _check_fitted_state(path, module)
    if parts.denoiser.precond.per_component and parts.denoiser.sigma_data is None:
        raise CheckpointError(
            f"checkpoint {path} was trained with precond.per_component=true but holds no "
            "per-component σ_data (denoiser.sigma_data): it is incomplete."
        )
    return module.eval(), parts, cfg
