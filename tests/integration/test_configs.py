"""Every YAML composes with the real train config and instantiates; bad combinations are named."""

from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate

from diffusion_lab.build import ConfigError, build
from diffusion_lab.cli import CONFIG_DIR

GROUPS = [
    "dataset",
    "degradation",
    "schedule",
    "basis",
    "backbone",
    "precond",
    "objective",
    "objective/time",
    "objective/weighting",
    "sampler",
    "sampler/grid",
    "optim",
    "trainer",
    "logger",
    "callbacks",
]
# Options that need a partner from another group to make sense.
PARTNERS = {
    ("backbone", "mlp"): ["dataset=toy2d"],
    ("dataset", "toy2d"): ["backbone=mlp"],
    ("schedule", "blur_geometric"): ["degradation=blur"],
    ("schedule", "blur_w2"): ["degradation=blur_noise"],
    ("sampler", "cold"): ["degradation=cold_blur"],
    ("sampler", "cold_naive"): ["degradation=pixelate"],
    ("basis", "pca"): ["degradation=gud", "degradation.order=variance"],
}


def options(group):
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


CASES = [(g, o) for g in GROUPS for o in options(g)]


def test_every_group_has_options():
    assert all(options(g) for g in GROUPS)


@pytest.mark.parametrize("group, option", CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_option_composes_and_builds(make_cfg, group, option):
    cfg = make_cfg(f"{group}={option}", *PARTNERS.get((group, option), []))
    parts = build(cfg)
    assert parts.process.data_shape == tuple(parts.datamodule.data_shape)


@pytest.mark.parametrize("name", options("experiment") + options("debug"))
def test_presets_compose(make_cfg, name):
    """CPU presets build completely; paper-scale ones (data not shipped) compose and instantiate."""
    group = "debug" if name in options("debug") else "experiment"
    cfg = make_cfg(f"{group}={name}")
    if cfg.choices.dataset in ("digits", "toy2d"):
        build(cfg)
    else:
        for node in ("degradation", "schedule", "backbone", "precond", "objective", "sampler"):
            instantiate(cfg[node])


def test_unknown_option_is_rejected(make_cfg):
    with pytest.raises(ConfigCompositionException, match="sampler"):
        make_cfg("sampler=nope")


@pytest.mark.parametrize(
    "overrides, names",
    [
        (["backbone=mlp"], ["backbone=mlp", "dataset=digits"]),
        (["dataset=toy2d"], ["backbone=unet", "dataset=toy2d"]),
        (
            ["dataset=toy2d", "dataset.name=moons", "backbone=mlp", "conditional=true"],
            ["conditional=true", "dataset=toy2d"],
        ),
    ],
)
def test_incompatible_combinations_name_both_groups(make_cfg, overrides, names):
    with pytest.raises(ConfigError) as err:
        build(make_cfg(*overrides))
    for name in names:
        assert name in str(err.value)


@pytest.mark.parametrize(
    "degradation, schedule, objective, sampler",
    [
        ("blur", "blur_geometric", "denoising", "momentum"),
        ("blur_noise", "blur_w2", "denoising", "momentum"),
        ("mask", "cosine", "soft_score", "momentum"),
        ("gud", "cosine", "eps", "sde"),
        ("cold_blur", "cosine", "cold", "cold"),
        ("pixelate", "cosine", "cold", "cold"),
        ("snow", "cosine", "cold", "cold"),
    ],
)
def test_degradation_picks_matching_defaults(make_cfg, degradation, schedule, objective, sampler):
    """`python train.py degradation=X` alone selects a schedule, objective and sampler that fit."""
    cfg = make_cfg(f"degradation={degradation}")
    assert (cfg.choices.schedule, cfg.choices.objective, cfg.choices.sampler) == (
        schedule,
        objective,
        sampler,
    )
    if degradation == "gud":  # GUD's ε-loss on stratified t (Gerdes et al. 2024)
        assert cfg.choices["objective/time"] == "stratified"
    overridden = make_cfg(f"degradation={degradation}", "objective=v")
    assert overridden.choices.objective == "v"  # the command line still wins


def test_per_component_sigma_data_is_the_data_rms_in_the_basis(make_cfg):
    """precond.per_component=true: each DCT frequency with its own RMS over the training images."""
    parts = build(make_cfg("degradation=blur_noise", "precond.per_component=true"))
    sd = parts.denoiser.sigma_data
    assert sd is not None and sd.shape == parts.process.data_shape
    coefs = parts.process.basis(parts.statistics.images)
    assert torch.allclose(sd, coefs.pow(2).mean(0).sqrt().clamp(min=1e-4))
    assert (
        sd[0, 0, 0] > 10 * sd[0, -1, -1]
    )  # digits: far more energy at DC than at the top frequency
    assert build(make_cfg("degradation=gaussian")).denoiser.sigma_data is None


def test_per_component_sigma_data_rejects_cold_operators(make_cfg):
    with pytest.raises(ConfigError, match="per_component"):
        build(make_cfg("degradation=cold_blur", "precond.per_component=true"))


def test_evaluate_composes_a_sampler_inside_the_checkpoints_config(make_cfg):
    """`evaluate.py samplers=[cold_naive]` on a Cold run: the sampler's
    `num_steps: ${degradation.num_levels}` reads the run's value (the defaults have no num_levels)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from diffusion_lab.cli.evaluate import sampler_config

    run_cfg = make_cfg("degradation=cold_blur", "degradation.num_levels=7")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        node = sampler_config("cold_naive", run_cfg)
    assert node.num_steps == 7 and node._target_ == "diffusion_lab.samplers.cold.cold_naive"
