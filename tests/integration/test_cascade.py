"""Coarse-to-fine generation through the real CLI: an 8×8 base and an 8→16 super-resolution stage
trained by train.py, one `sample.py ckpt_path=<base> superres=[<stage>]` call, the refused
combinations, and exact resume of the super-resolution stage."""

import json

import pytest
import torch

from diffusion_lab.cli.train import train
from tests.conftest import compose_config, run_cli, run_main
from tests.integration.test_resume import assert_same_training_state

SMALL = [
    "debug=fast",
    "backbone.model_channels=8",
    "backbone.attn_resolutions=[]",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
]


@pytest.fixture(scope="module")
def cascade(tmp_path_factory):
    """A base and a super-resolution checkpoint, trained by `python train.py experiment=...`."""
    cwd = tmp_path_factory.mktemp("cascade")
    for name in ("base", "sr"):
        proc = run_cli(
            "train.py",
            f"experiment=cascade_{name}_digits",
            *SMALL,
            f"hydra.run.dir={cwd}/{name}",
            cwd=cwd,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd, cwd / "base/checkpoints/last.ckpt", cwd / "sr/checkpoints/last.ckpt"


def test_one_sample_call_runs_the_cascade(cascade):
    cwd, base, sr = cascade
    # the stage's own run sampled it on downsampled validation digits at 16x16
    assert (cwd / "sr/samples/samples.png").is_file()
    proc = run_cli(
        "sample.py",
        f"ckpt_path={base}",
        f"superres=[{sr}]",
        "num_samples=5",
        "seed=2",
        f"hydra.run.dir={cwd}/out",
        cwd=cwd,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = cwd / "out"
    assert (out / "preview.png").is_file() and (out / "samples.png").is_file()
    assert proc.stdout.index("preview:") < proc.stdout.index("samples:")  # the preview came first
    x = torch.load(out / "samples.pt", weights_only=True)
    assert x.shape == (5, 1, 16, 16) and torch.isfinite(x).all()
    results = json.loads((out / "results.json").read_text())
    assert [s["shape"] for s in results["stages"]] == [[1, 8, 8], [1, 16, 16]]
    assert [s["nfe"] for s in results["stages"]] == [3, 3] and results["nfe"] == 6
    assert 0 < results["time_to_preview_s"] < results["seconds"]
    assert results["stages"][1]["aug_sample"] == 0.1 and results["superres"] == [str(sr)]


@pytest.mark.parametrize(
    "args, message",
    [
        (["superres=[{base}]"], "superres[0]={base} is not a super-resolution model"),
        (["ckpt_path={sr}", "superres=[{sr}]"], "ckpt_path={sr} is a super-resolution model"),
        (["ckpt_path={sr}"], "samples conditioned on low-resolution images"),
    ],
)
def test_refused_cascades_get_one_line(cascade, args, message):
    cwd, base, sr = cascade
    args = [a.format(base=base, sr=sr) for a in args]
    if not any(a.startswith("ckpt_path=") for a in args):
        args.insert(0, f"ckpt_path={base}")
    status, _, err = run_main("sample.py", *args, "num_samples=2", root=cwd)
    assert status == 2, err[-2000:]
    assert message.format(base=base, sr=sr) in err.strip().splitlines()[-1]
    assert "Traceback" not in err


def test_class_labels_and_init_images_are_refused_with_a_cascade(cascade, tmp_path):
    from diffusion_lab.cli.sample import sample_superres
    from diffusion_lab.values import ConfigError

    with pytest.raises(ConfigError, match="class_label and init_image are not supported"):
        sample_superres(None, None, None, "cpu", tmp_path, labels=torch.zeros(2, dtype=torch.long))


def test_a_stage_of_the_wrong_size_gets_one_line_and_exit_2(cascade):
    """A 16×16 plain model as the base of an 8→16 stage: the chain is refused before sampling."""
    cwd, _, sr = cascade
    plain = train(compose_config("train", [*SMALL, "evaluation.metrics=[]"], cwd / "plain"))
    status, _, err = run_main(
        "sample.py", f"ckpt_path={plain['checkpoint']}", f"superres=[{sr}]", root=cwd
    )
    assert status == 2
    assert "takes low-resolution images of shape (1, 8, 8)" in err
    assert "generates (1, 16, 16): the stage after it needs lowres.low_size=16" in err
    assert "Traceback" not in err


def _ckpt(run):
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def test_the_super_resolution_stage_resumes_bitwise_exactly(tmp_path):
    """2 + 2 steps equal 4: the augmentation levels and noise come from the step's seed."""
    args = ["experiment=cascade_sr_digits", *SMALL, "dataset.batch_size=32"]
    train(compose_config("train", args, tmp_path / "straight"))
    train(compose_config("train", [*args, "trainer.max_steps=2"], tmp_path / "split"))
    split = tmp_path / "split/checkpoints/last.ckpt"
    train(compose_config("train", [*args, f"ckpt_path={split}"], tmp_path / "resumed"))
    straight, resumed = _ckpt(tmp_path / "straight"), _ckpt(tmp_path / "resumed")
    assert straight["global_step"] == 4
    assert_same_training_state(straight, resumed)
