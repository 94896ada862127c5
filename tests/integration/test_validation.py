"""Config validation at build time: every invalid value names the option and what would be valid."""

import sys

import pytest

from diffusion_lab.build import ConfigError, build
from tests.conftest import ROOT, run_cli

CASES = [
    (
        ["sampler.num_steps=0"],
        "sampler.num_steps=0 is not valid: it must be an integer in [1, 10000]",
    ),
    (["dataset.batch_size=0"], "dataset.batch_size=0"),
    (["optim.optimizer.lr=-1"], "optim.optimizer.lr=-1 is not valid"),
    (["trainer.max_steps=0"], "trainer.max_steps=0"),
    (["ema.half_life_images=-5"], "ema.half_life_images=-5"),
    (["val_num_t=0"], "val_num_t=0"),
    (["num_samples=0"], "num_samples=0"),
    (
        ["degradation=gud", "degradation.softness=0"],
        "degradation=gud: degradation.softness must be > 0",
    ),
    (
        ["schedule.logsnr_min=5", "schedule.logsnr_max=-5"],
        "schedule=cosine: schedule needs logsnr_min < logsnr_max",
    ),
    (["dataset.image_size=18", "dataset.dim=324"], "multiple of 4"),
    (["dataset.image_size=18"], "set dataset.dim=324"),
    (["backbone=mlp"], "backbone=mlp takes flat vectors"),
    (
        ["degradation=blur", "sampler=heun", "sampler/grid=uniform", "sampler.s_churn=1"],
        "with s_churn > 0 needs an isotropic degradation",
    ),
    (["degradation=blur", "sampler=heun"], "sampler/grid=karras spaces steps by log-SNR"),
    (
        ["conditional=true", "dataset=toy2d", "backbone=mlp"],
        "needs backbone.num_classes (set it to 8)",
    ),
]


@pytest.mark.parametrize("overrides, message", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_invalid_config_names_the_option(make_cfg, overrides, message):
    with pytest.raises(ConfigError, match=None) as err:
        build(make_cfg("debug=fast", *overrides))
    assert message in str(err.value)


def test_cli_shows_the_message_without_a_traceback(tmp_path):
    proc = run_cli(
        "train.py",
        "debug=fast",
        "degradation=gud",
        "degradation.softness=0",
        f"hydra.run.dir={tmp_path}/r",
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "error: degradation=gud: degradation.softness must be > 0" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_readme_capability_table_matches_the_code(tmp_path):
    """The README's table of samplers × degradations is generated from the capability flags."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import capability_table
    finally:
        sys.path.pop(0)
    readme = capability_table.readme_block((ROOT / "README.md").read_text())
    assert readme == capability_table.table(str(tmp_path)), (
        "README.md's capability table is stale: run `python scripts/capability_table.py --write`"
    )
