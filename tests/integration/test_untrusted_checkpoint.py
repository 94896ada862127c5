"""A shared checkpoint cannot run code: its stored config names only this project's targets.

Every crafted file below would, without the allowlist, make `hydra.utils.instantiate` import and
call something that writes a marker file. Each must be refused with one line naming the group and
the target, before any import or call, by every entry point that reads a checkpoint (sample.py,
evaluate.py, export.py, train.py resuming, scripts/guidance_sweep.py), and the marker never appears.
"""

import copy
import importlib.util
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from diffusion_lab.allowlist import (
    RENAMED_TARGETS,
    ForeignTargetError,
    allowed_targets,
    check_stored_config,
)
from diffusion_lab.build import module_from_checkpoint
from diffusion_lab.checkpoint import CONFIG_KEY, CheckpointError
from diffusion_lab.cli.train import train
from tests.conftest import ROOT, compose_config, run_main

FAST = ["debug=fast", "trainer.max_steps=2", "trainer.val_check_interval=2"]


@pytest.fixture(scope="module")
def real_ckpt(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("real")
    results = train(compose_config("train", FAST, out))
    return Path(results["checkpoint"])


def touch(marker: Path) -> dict:
    """A node that, instantiated, creates `marker`: Path.touch(Path(marker))."""
    return {
        "_target_": "pathlib.Path.touch",
        "_args_": [{"_target_": "pathlib.Path", "_args_": [str(marker)]}],
    }


def _set(cfg: dict, key: str, value) -> None:
    *parents, last = key.split(".")
    for p in parents:
        cfg = cfg[p]
    cfg[last] = value


# (id, config key, crafted value given the marker path, words the refusal must contain)
CRAFTED = [
    ("file_creating_dataset", "dataset", touch, "dataset._target_=pathlib.Path.touch"),
    (
        "nested_args_chain",
        "backbone._args_",
        lambda m: [{"_target_": "builtins.open", "_args_": [str(m), "w"]}],
        "backbone._args_[0]._target_=builtins.open",
    ),
    (
        "target_in_partial",
        "objective",
        lambda m: {"_target_": "pathlib.Path.write_text", "_partial_": True, "data": "x"},
        "group `objective`",
    ),
    (
        "chained_through_an_allowed_sampler",
        "sampler.grid",
        lambda m: {"_target_": "pathlib.Path.write_text", "_args_": [touch(m), "x"]},
        "sampler.grid._target_=pathlib.Path.write_text",
    ),
    (
        "foreign_optimizer",
        "optim.optimizer._target_",
        lambda m: "torch.optim.LBFGS",
        "optim.optimizer._target_=torch.optim.LBFGS",
    ),
    (
        "project_target_in_the_wrong_group",
        "dataset._target_",
        lambda m: "diffusion_lab.checkpoint.AtomicCheckpointIO",
        "group `dataset`",
    ),
    (
        "resolver_builds_a_target",
        "dataset",
        lambda m: "${oc.decode:'{_target_: pathlib.Path.touch}'}",
        "interpolation",
    ),
    ("target_in_a_list", "trainer.plugins", lambda m: [touch(m)], "trainer.plugins[0]._target_"),
    ("non_string_target", "schedule._target_", lambda m: ["pathlib", "Path"], "not a dotted name"),
]


@pytest.fixture
def craft(real_ckpt, tmp_path):
    def make(key, value, name="crafted.ckpt") -> Path:
        ckpt = torch.load(real_ckpt, weights_only=True)
        _set(ckpt[CONFIG_KEY], key, value)
        path = tmp_path / name
        torch.save(ckpt, path)
        return path

    return make


@pytest.mark.parametrize("case", CRAFTED, ids=[c[0] for c in CRAFTED])
def test_crafted_configs_are_refused_before_any_call(craft, tmp_path, case):
    _, key, value, words = case
    marker = tmp_path / "pwned"
    path = craft(key, value(marker))
    with pytest.raises(CheckpointError, match="refusing the config") as err:
        module_from_checkpoint(path)
    assert words in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()


def test_every_entry_point_refuses_them(craft, tmp_path, real_ckpt):
    marker = tmp_path / "pwned"
    crafted = craft("dataset", touch(marker))
    cases = [
        ("sample.py", [f"ckpt_path={crafted}", "num_samples=1"]),
        ("evaluate.py", [f"ckpt_path={crafted}", "metrics=[fid]"]),
        ("train.py", [*FAST, f"ckpt_path={crafted}"]),  # resume reads the stored config too
        ("export.py", [f"ckpt_path={crafted}"]),
    ]
    for script, args in cases:
        run = tmp_path / script
        status, _, err = run_main(script, *args, f"hydra.run.dir={run}", root=tmp_path)
        assert status == 2, (script, err)
        assert err.count("\n") == 1 and err.startswith("error: ") and "pathlib.Path.touch" in err
        assert not (run / "results.json").exists()
    spec = importlib.util.spec_from_file_location("sweep", ROOT / "scripts" / "guidance_sweep.py")
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    assert sweep.main(["--ckpt", str(crafted), "--out", str(tmp_path / "sweep")]) == 2
    assert not marker.exists()


def test_stored_paths_are_replaced_by_the_callers(real_ckpt, tmp_path):
    """A checkpoint's paths (cache, data) point to its author's disk: never used on load."""
    elsewhere = tmp_path / "elsewhere"
    ckpt = torch.load(real_ckpt, weights_only=True)
    for key in ("cache_dir", "data_dir", "root_dir"):
        ckpt[CONFIG_KEY]["paths"][key] = str(elsewhere / key)
    torch.save(ckpt, tmp_path / "c.ckpt")
    mine = OmegaConf.create({k: str(tmp_path / "mine" / k) for k in ckpt[CONFIG_KEY]["paths"]})
    _, _, cfg = module_from_checkpoint(tmp_path / "c.ckpt", paths=mine)
    assert cfg.paths.cache_dir == mine.cache_dir and cfg.paths.data_dir == mine.data_dir
    assert not elsewhere.exists()


def test_renamed_targets_of_older_checkpoints_load_under_their_new_names(real_ckpt, tmp_path):
    """Checkpoints written before a sampler was renamed name the old function: it maps to the new
    one (allowlist.RENAMED_TARGETS); the old name alone, as a module attribute, no longer exists."""
    ckpt = torch.load(real_ckpt, weights_only=True)
    ckpt[CONFIG_KEY]["sampler"] = {
        "_target_": "diffusion_lab.samplers.ddim.sample",
        "_partial_": True,
        "num_steps": 3,
        "grid": {"_target_": "diffusion_lab.samplers.grids.uniform", "_partial_": True},
    }
    torch.save(ckpt, tmp_path / "old.ckpt")
    module, _, cfg = module_from_checkpoint(tmp_path / "old.ckpt")
    assert cfg.sampler._target_ == "diffusion_lab.samplers.ddim.ddim"
    assert module.sampler.func.__name__ == "ddim"
    for old, new in RENAMED_TARGETS.items():
        module_name, old_name = old.rsplit(".", 1)
        assert not hasattr(importlib.import_module(module_name), old_name)
        assert callable(
            getattr(importlib.import_module(new.rsplit(".", 1)[0]), new.rsplit(".", 1)[1])
        )


def test_the_configs_this_project_ships_all_pass(tmp_path):
    """No false refusals: every option of every model group and every experiment, resolved as a
    checkpoint stores it, passes the allowlist."""
    configs = ROOT / "configs"
    overrides = [[]]
    for group in (
        "dataset",
        "backbone",
        "degradation",
        "objective",
        "precond",
        "sampler",
        "logger",
    ):
        overrides += [[f"{group}={p.stem}"] for p in sorted((configs / group).glob("*.yaml"))]
    overrides += [[f"experiment={p.stem}"] for p in sorted((configs / "experiment").glob("*.yaml"))]
    overrides += [
        ["degradation=gud", "basis=pca"],
        ["degradation=cold_blur", "sampler=cold"],
        ["backbone=unet_xattn", "backbone.encoder._target_=diffusion_lab.encoders.CLIPTextEncoder"],
        ["optim.optimizer._target_=torch.optim.SGD"],
        ["trainer=ddp"],
    ]
    checked = 0
    for o in overrides:
        cfg = compose_config("train", o, tmp_path)
        if o and o[0].startswith(
            "sampler=cold"
        ):  # Cold samplers take num_levels from a Cold degradation
            continue
        check_stored_config(OmegaConf.to_container(cfg, resolve=True))
        checked += 1
    assert checked > 40
    # the autoencoder stage (train_ae.py) stores its config the same way
    for o in (
        [],
        ["experiment=ae_mnist"],
        ["experiment=ae_cifar10"],
        ["discriminator.enabled=true"],
    ):
        cfg = compose_config("train_ae", o, tmp_path)
        check_stored_config(OmegaConf.to_container(cfg, resolve=True))


def test_the_allowlist_is_per_group():
    allowed = allowed_targets()
    assert "diffusion_lab.bases.PCA" in allowed["degradation"]  # degradation.basis: ${basis}
    assert "diffusion_lab.samplers.grids.karras" in allowed["sampler"]  # sampler/grid/
    assert "torch.optim.AdamW" in allowed["optim"] and "torch.optim.AdamW" not in allowed["dataset"]
    with pytest.raises(ForeignTargetError, match="empty"):
        check_stored_config({})
    good = {"dataset": {"_target_": "diffusion_lab.data.digits.DigitsDataModule"}}
    check_stored_config(good)
    bad = copy.deepcopy(good)
    bad["dataset"]["transform"] = torch.zeros(1)
    with pytest.raises(ForeignTargetError, match="not plain data"):
        check_stored_config(bad)


@pytest.fixture(scope="module")
def pca_ckpt(tmp_path_factory) -> Path:
    """A checkpoint whose process has fitted buffers (GUD in the PCA basis, whitened)."""
    out = tmp_path_factory.mktemp("pca")
    args = [*FAST, "degradation=gud", "basis=pca", "degradation.order=variance"]
    return Path(train(compose_config("train", args, out))["checkpoint"])


def _sample_fails_in_one_line(tmp_path, ckpt) -> str:
    """sample.py on a crafted checkpoint: exit status 2, one `error:` line, nothing written."""
    run = tmp_path / "run"
    status, _, err = run_main(
        "sample.py", f"ckpt_path={ckpt}", "num_samples=1", f"hydra.run.dir={run}", root=tmp_path
    )
    assert status == 2, err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert not (run / "results.json").exists() and not (run / "samples.pt").exists()
    return err


@pytest.mark.parametrize(
    "key, value",
    [
        ("process.degradation.basis.components", torch.eye(3)),  # wrong size for 16×16 data
        ("process.degradation.noise_scale", torch.ones(2, 2)),
        ("process.degradation.start", torch.full((1, 16, 16), float("nan"))),
    ],
    ids=["pca_of_other_size", "noise_scale_of_other_shape", "nan_start"],
)
def test_crafted_fitted_buffers_get_one_line(pca_ckpt, tmp_path, key, value):
    """Fitted buffers are sized from the checkpoint (checkpoint.adopt_fitted_shapes): ones that do
    not fit the model's data shape, or are not finite, are refused at load in one line."""
    ckpt = torch.load(pca_ckpt, weights_only=True)
    assert key in ckpt["state_dict"]
    tail = key.split(".", 2)[-1]  # the basis is shared: process, denoiser and EMA all hold it
    for name in [k for k in ckpt["state_dict"] if k.endswith(tail)]:
        ckpt["state_dict"][name] = value
    torch.save(ckpt, tmp_path / "bad.ckpt")
    assert "bad.ckpt" in _sample_fails_in_one_line(tmp_path, tmp_path / "bad.ckpt")


def test_crafted_legacy_statistics_get_one_line(pca_ckpt, tmp_path):
    """Checkpoints from before issue 15 carry dataset statistics, from which the fitted state is
    rebuilt: ones of the wrong type are refused in one line, with no write."""
    from diffusion_lab.checkpoint import LEGACY_STATISTICS_KEY

    ckpt = torch.load(pca_ckpt, weights_only=True)
    ckpt[LEGACY_STATISTICS_KEY] = {
        "mean": torch.zeros(1, 16, 16),
        "std": torch.ones(1, 16, 16),
        "num_samples": 3,
        "images": "not images",
        "pca_components": torch.eye(256),
        "pca_variance": torch.ones(256),
    }
    torch.save(ckpt, tmp_path / "legacy.ckpt")
    err = _sample_fails_in_one_line(tmp_path, tmp_path / "legacy.ckpt")
    assert "malformed dataset statistics" in err, err
