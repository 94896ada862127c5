"""Class-conditional training with label dropout and classifier-free guidance, through the config
and the CLI: build-time checks, `sample.py class_label=... guidance=...`, and (slow) the class
match of guided samples measured by the digits classifier."""

import json

import pytest
import torch

from diffusion_lab.build import ConfigError, build, build_module, module_from_checkpoint
from diffusion_lab.sampling import generate_ema
from tests.conftest import run_cli, run_main

CONDITIONAL = ["conditional=true", "backbone.num_classes=10"]
FAST = ["debug=fast", "trainer.max_steps=2", "trainer.val_check_interval=2"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["label_dropout=1.0", *CONDITIONAL], "label_dropout=1.0 is not valid: it must be a prob"),
        (["label_dropout=-0.1", *CONDITIONAL], "label_dropout=-0.1 is not valid"),
        (["label_dropout=0.1"], "label_dropout=0.1 drops class labels, but conditional=false"),
        (["conditional=true", "backbone.num_classes=5"], "backbone.num_classes=5 is fewer than"),
    ],
)
def test_bad_label_dropout_and_classes_fail_at_build(make_cfg, overrides, message):
    with pytest.raises(ConfigError, match=message):
        build(make_cfg(*FAST, *overrides))


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ([], 0.0),
        (CONDITIONAL, 0.1),
        ([*CONDITIONAL, "label_dropout=0.25"], 0.25),
        (["experiment=conditional_digits"], 0.1),
    ],
)
def test_label_dropout_default_follows_conditional(make_cfg, overrides, expected):
    cfg = make_cfg(*FAST, *overrides)
    module = build_module(cfg, build(cfg))
    assert module.label_dropout == expected
    assert module.class_conditional == bool(overrides)
    assert module.num_classes == (10 if overrides else None)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 6-step conditional run through the CLI, and a 2-step unconditional one."""
    cwd = tmp_path_factory.mktemp("conditional")
    proc = run_cli(
        "train.py", "debug=fast", *CONDITIONAL, "label_dropout=0.2", f"hydra.run.dir={cwd}/cond",
        cwd=cwd,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_cli("train.py", *FAST, f"hydra.run.dir={cwd}/uncond", cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd, cwd / "cond/checkpoints/last.ckpt", cwd / "uncond/checkpoints/last.ckpt"


def test_sample_a_class_with_guidance(runs):
    cwd, cond_ckpt, _ = runs
    args = ["sampler=ddim", "num_steps=3", "num_samples=10", f"ckpt_path={cond_ckpt}"]
    proc = run_cli(
        "sample.py", *args, "class_label=all", "guidance=2.0", "guidance_rescale=0.5",
        f"hydra.run.dir={cwd}/s1", cwd=cwd,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((cwd / "s1/results.json").read_text())
    assert results["labels"] == list(range(10)) and results["class_label"] == "all"
    assert results["guidance"] == 2.0 and results["guidance_rescale"] == 0.5
    assert results["nfe"] == 3 and "doubled batch" in results["nfe_counts"]
    x = torch.load(cwd / "s1/samples.pt", weights_only=True)
    assert x.shape == (10, 1, 16, 16) and torch.isfinite(x).all()

    # the rest in this process (same entry point, without a subprocess's start-up)
    status, _, err = run_main(
        "sample.py", *args, "class_label=[3,5]", f"hydra.run.dir={cwd}/s2", root=cwd
    )
    assert status == 0, err[-3000:]
    assert json.loads((cwd / "s2/results.json").read_text())["labels"] == [3] * 5 + [5] * 5

    for bad, message in [
        ("class_label=12", "class_label=12 is not valid: give a class in 0..9"),
        ("guidance=-1", "guidance=-1 is not valid"),
    ]:
        extra = [bad] if bad.startswith("class_label") else ["class_label=3", bad]
        status, _, err = run_main("sample.py", *args, *extra, f"hydra.run.dir={cwd}/bad", root=cwd)
        assert status == 2 and message in err, err[-2000:]
        assert "Traceback" not in err


def test_unconditional_checkpoint_rejects_class_label(runs):
    cwd, _, uncond_ckpt = runs
    proc = run_cli(
        "sample.py", f"ckpt_path={uncond_ckpt}", "class_label=3", "num_samples=2",
        f"hydra.run.dir={cwd}/u", cwd=cwd,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "class_label=3 needs a class-conditional checkpoint" in proc.stderr
    assert "conditional=false" in proc.stderr and "Traceback" not in proc.stderr


def test_generate_counts_network_calls_of_the_guided_denoiser(runs):
    _, cond_ckpt, _ = runs
    module, parts, _ = module_from_checkpoint(cond_ckpt)
    labels = torch.tensor([0, 4, 9])
    x1, nfe1 = generate_ema(module, 3, seed=1, cond=labels, guidance=1.0)
    x3, nfe3 = generate_ema(module, 3, seed=1, cond=labels, guidance=3.0)
    assert nfe1 == nfe3 == 3  # dpmpp, 3 steps: one call per step, guided or not
    assert x1.shape == x3.shape == (3, 1, 16, 16) and not torch.equal(x1, x3)
    with pytest.raises(ValueError, match=r"cond must have shape \(3,\)"):
        generate_ema(module, 3, cond=torch.tensor([1, 2]))


@pytest.mark.slow
def test_guidance_makes_samples_match_their_class(tmp_path):
    """A small conditional digits model (label dropout 0.1): the digits classifier recognises the
    requested class in well over chance (10%) of conditional samples, and guidance (w = 4) does
    not do worse than the unconditional model (w = 0, ~chance)."""
    run = tmp_path / "run"
    proc = run_cli(
        "train.py", *CONDITIONAL, "label_dropout=0.1", "trainer.max_steps=200",
        "trainer.val_check_interval=200", "evaluation.metrics=[]", "sampler.num_steps=12",
        "callbacks.sample_grid.every_n_steps=200", f"hydra.run.dir={run}", cwd=tmp_path,
        timeout=1200,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_cli(
        "scripts/guidance_sweep.py", f"ckpt_path={run}/checkpoints/last.ckpt", "--scales", "0,1,4",
        "--num", "100", "--out", str(tmp_path / "sweep"), cwd=tmp_path, timeout=1200,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "sweep/guidance_sweep.json").read_text())
    rates = report["rates"]
    assert rates["1"] > 0.3, rates
    assert rates["4"] >= rates["0"], rates
    assert (tmp_path / "sweep/guidance_sweep.png").is_file()
