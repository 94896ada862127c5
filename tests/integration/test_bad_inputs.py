"""Every bad input a user (or a hostile file) can give the CLIs gets one line and a failing status.

Table-driven through the real entry points (`run_main`: the same @hydra.main, in this process):
for each case the exit status is 2 (143 for SIGTERM), stderr is exactly one line `error: ...`
that contains the words a user needs, and nothing that looks like a finished run is left behind
(no results.json). Cases that need a second process (the run-directory lock) use one.
"""

import errno
import json
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch

from diffusion_lab.checkpoint import CONFIG_KEY
from diffusion_lab.cli.train import train
from tests.conftest import compose_config, run_main

FAST = ["debug=fast", "trainer.max_steps=2", "trainer.val_check_interval=2"]


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A valid PNG signature + IHDR claiming width × height, and one tiny IDAT: a decompression
    bomb's header (the pixels are never there; a reader must refuse from the header alone)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A real checkpoint, a Cold (snow) one, and hostile variants of the first."""
    root = tmp_path_factory.mktemp("files")
    good = Path(train(compose_config("train", FAST, root / "good"))["checkpoint"])
    snow = Path(
        train(compose_config("train", [*FAST, "degradation=snow"], root / "snow"))["checkpoint"]
    )
    ckpt = torch.load(good, weights_only=True)

    def variant(name: str, change) -> Path:
        c = torch.load(good, weights_only=True)
        change(c)
        torch.save(c, root / name)
        return root / name

    def nan_ema(c):
        key = next(k for k in c["state_dict"] if k.startswith("ema."))
        c["state_dict"][key] = c["state_dict"][key] * float("nan")

    out = {
        "good": good,
        "snow": snow,
        "empty_config": variant("empty.ckpt", lambda c: c.update({CONFIG_KEY: {}})),
        "mismatch": variant(
            "mismatch.ckpt", lambda c: c[CONFIG_KEY]["backbone"].update(model_channels=16)
        ),
        "nan": variant("nan.ckpt", nan_ema),
        "truncated": root / "truncated.ckpt",
        "bomb": png_header_only(root / "bomb.png", 100_000, 100_000),
        "not_image": root / "notes.png",
        "dir": good.parent.parent,
    }
    out["truncated"].write_bytes(good.read_bytes()[:4096])
    out["not_image"].write_text("not an image")
    assert ckpt["global_step"] == 2
    return out


# (id, script, args (with {name} for files[name]), words the one line must contain)
CASES = [
    ("lr_inf", "train.py", [*FAST, "optim.optimizer.lr=inf"], "optim.optimizer.lr=inf"),
    ("lr_nan", "train.py", [*FAST, "optim.optimizer.lr=nan"], "optim.optimizer.lr=nan"),
    ("train_steps_huge", "train.py", [*FAST, "sampler.num_steps=1e8"], "sampler.num_steps"),
    ("train_steps_fraction", "train.py", [*FAST, "sampler.num_steps=2.5"], "an integer in [1,"),
    ("train_seed_negative", "train.py", [*FAST, "seed=-1"], "seed=-1"),
    (
        "train_max_steps_zero",
        "train.py",
        ["debug=fast", "trainer.max_steps=0"],
        "trainer.max_steps",
    ),
    ("train_stray_sampler_key", "train.py", [*FAST, "+sampler.foo=1"], "'foo'"),
    ("train_cold_with_heun", "train.py", [*FAST, "degradation=snow", "sampler=heun"], "linear"),
    (
        "train_adaptive_on_blur",
        "train.py",
        [*FAST, "degradation=blur", "sampler=adaptive", "~sampler.num_steps"],
        "sampler=adaptive needs an isotropic degradation",
    ),
    ("train_adaptive_steps", "train.py", [*FAST, "sampler=adaptive"], "~sampler.num_steps"),
    ("resume_missing", "train.py", [*FAST, "ckpt_path=nowhere.ckpt"], "checkpoint not found"),
    ("resume_dir", "train.py", [*FAST, "ckpt_path={dir}"], "is a directory"),
    ("sample_no_ckpt", "sample.py", [], "ckpt_path is required"),
    ("sample_steps_zero", "sample.py", ["ckpt_path={good}", "num_steps=0"], "num_steps=0"),
    ("sample_steps_huge", "sample.py", ["ckpt_path={good}", "num_steps=1e8"], "num_steps="),
    ("sample_zero", "sample.py", ["ckpt_path={good}", "num_samples=0"], "num_samples=0"),
    ("sample_negative", "sample.py", ["ckpt_path={good}", "num_samples=-3"], "num_samples=-3"),
    ("sample_seed", "sample.py", ["ckpt_path={good}", "seed=-1"], "seed=-1"),
    ("start_t_zero", "sample.py", ["ckpt_path={good}", "start_t=0"], "start_t=0"),
    ("start_t_above_1", "sample.py", ["ckpt_path={good}", "start_t=1.5"], "(0, 1]"),
    ("sample_dir", "sample.py", ["ckpt_path={dir}"], "is a directory"),
    ("sample_stray_key", "sample.py", ["ckpt_path={good}", "+sampler.x=1"], "'x'"),
    (
        "sample_adaptive_steps",
        "sample.py",
        ["ckpt_path={good}", "sampler=adaptive", "num_steps=5"],
        "chooses its own steps",
    ),
    (
        "eval_adaptive_steps",
        "evaluate.py",
        ["ckpt_path={good}", "samplers=[adaptive]", "num_steps=[5]"],
        "chooses its own steps",
    ),
    (
        "sample_adaptive_stray_knob",
        "sample.py",
        ["ckpt_path={good}", "sampler=adaptive", "+sampler.tol=1"],
        "'tol'",
    ),
    ("sample_truncated", "sample.py", ["ckpt_path={truncated}"], "could not read checkpoint"),
    ("sample_empty_config", "sample.py", ["ckpt_path={empty_config}"], "empty"),
    ("sample_mismatch", "sample.py", ["ckpt_path={mismatch}"], "does not fit the model"),
    ("sample_nan_weights", "sample.py", ["ckpt_path={nan}"], "non-finite weights"),
    ("init_bomb", "sample.py", ["ckpt_path={good}", "init_image={bomb}"], "too large"),
    (
        "init_not_image",
        "sample.py",
        ["ckpt_path={good}", "init_image={not_image}"],
        "not a readable",
    ),
    ("init_dir", "sample.py", ["ckpt_path={good}", "init_image={dir}"], "is a directory"),
    (
        "eval_cold_heun",
        "evaluate.py",
        ["ckpt_path={snow}", "samplers=[heun]"],
        "sampler=heun needs",
    ),
    ("eval_unknown_sampler", "evaluate.py", ["ckpt_path={good}", "samplers=[nope]"], "'nope'"),
    ("eval_steps_zero", "evaluate.py", ["ckpt_path={good}", "num_steps=[0]"], "num_steps=0"),
    ("eval_seed", "evaluate.py", ["ckpt_path={good}", "seed=-1"], "seed=-1"),
    ("eval_no_ckpt", "evaluate.py", [], "ckpt_path is required"),
    ("eval_nan_weights", "evaluate.py", ["ckpt_path={nan}"], "non-finite weights"),
]


if not torch.cuda.is_available():  # on a GPU machine device=cuda is fine
    CASES.append(("sample_no_gpu", "sample.py", ["ckpt_path={good}", "device=cuda"], "no CUDA GPU"))


def assert_one_line_error(status: int, err: str, words: str, expected_status: int = 2) -> None:
    assert status == expected_status, err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert words in err, err


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_one_line(files, tmp_path, case):
    _, script, args, words = case
    args = [a.format(**files) for a in args]
    run = tmp_path / "run"
    sets_count = any(a.startswith("num_samples=") for a in args)
    small = [] if script == "evaluate.py" or sets_count else ["num_samples=1"]
    status, _, err = run_main(script, *args, *small, f"hydra.run.dir={run}", root=tmp_path)
    assert_one_line_error(status, err, words)
    assert not (run / "results.json").exists()
    assert not (run / "checkpoints" / "last.ckpt").exists()


def test_disk_full_is_one_line(tmp_path, monkeypatch):
    """ENOSPC while writing a checkpoint (checked for real on a 3 MB tmpfs: see the issue note)."""

    def full(obj, f):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    run = tmp_path / "run"
    status, _, err = run_main("train.py", *FAST, f"hydra.run.dir={run}", root=tmp_path)
    assert_one_line_error(status, err, "No space left on device writing")
    assert not (run / "results.json").exists()
    assert not list((run / "checkpoints").glob("*"))  # no temporary files either


def test_a_second_run_in_the_same_directory_is_refused(tmp_path):
    """Another process holds the run directory: refused at once, its .hydra/ left untouched."""
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("the finished run's config\n")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from diffusion_lab.cli.run_lock import lock_run_dir; "
            f"lock_run_dir({str(run)!r}); print('locked', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        for script, args in (("train.py", FAST), ("sample.py", ["ckpt_path=x.ckpt"])):
            status, _, err = run_main(script, *args, f"hydra.run.dir={run}", root=tmp_path)
            assert_one_line_error(status, err, "another process is running in")
        assert (run / ".hydra" / "config.yaml").read_text() == "the finished run's config\n"
        assert sorted(p.name for p in run.iterdir()) == [".hydra", ".lock"]
    finally:
        holder.kill()
        holder.wait()


def test_orphaned_temporary_files_are_removed_at_the_next_start(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    orphan = run / "checkpoints" / ".last.ckpt.k3j2h1.tmp"
    orphan.write_bytes(b"half a checkpoint")
    keep = run / "checkpoints" / "notes.tmp"  # not one of ours (no leading dot): kept
    keep.write_text("mine")
    status, _, err = run_main(
        "sample.py", "ckpt_path=x.ckpt", f"hydra.run.dir={run}", root=tmp_path
    )
    assert status == 2 and not orphan.exists() and keep.exists()


def _terminate_self(*args, **kwargs):
    import os

    os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_during_the_test_pass_ends_the_run(tmp_path, monkeypatch):
    """Lightning's own handler only sets a flag during trainer.test (and its loop exits 0 at the
    next batch): SIGTERM after training must end the process with 143 and say what is left."""
    from diffusion_lab.module import DiffusionModule

    monkeypatch.setattr(DiffusionModule, "test_step", _terminate_self)
    run = tmp_path / "run"
    status, _, err = run_main("train.py", *FAST, f"hydra.run.dir={run}", root=tmp_path)
    assert_one_line_error(status, err, "terminated by SIGTERM", expected_status=143)
    assert "holds its final state" in err and not (run / "results.json").exists()
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


def test_sigterm_while_sampling_ends_sample_py(files, tmp_path, monkeypatch):
    monkeypatch.setattr("diffusion_lab.cli.sample.generate_ema", _terminate_self)
    run = tmp_path / "run"
    status, _, err = run_main(
        "sample.py", f"ckpt_path={files['good']}", f"hydra.run.dir={run}", root=tmp_path
    )
    assert_one_line_error(status, err, "terminated by SIGTERM", expected_status=143)
    assert not (run / "results.json").exists()


def test_a_run_that_never_validated_finishes_with_status_0(tmp_path):
    """max_steps below val_check_interval: no val/loss_ema to report; only a sweep needs it."""
    run = tmp_path / "run"
    args = ["debug=fast", "trainer.max_steps=2", "trainer.val_check_interval=5"]
    status, _, err = run_main("train.py", *args, f"hydra.run.dir={run}", root=tmp_path)
    assert status == 0, err
    assert json.loads((run / "results.json").read_text())["global_step"] == 2
    # resuming a finished run (auto_resume, same directory): nothing to train, still status 0
    status, _, err = run_main("train.py", *args, f"hydra.run.dir={run}", root=tmp_path)
    assert status == 0, err
    assert json.loads((run / "results.json").read_text())["global_step"] == 2


def test_nan_weights_stop_training_at_once_and_nothing_nan_is_saved(tmp_path, monkeypatch):
    """A finite gradient and a diverging update (as lr=inf would give): training stops at that
    step; the last good checkpoint named in the message is finite; no NaN state is written."""
    # callbacks run before the module's hook: poison in the optimizer step instead
    import pytorch_lightning as pl

    from diffusion_lab.module import DiffusionModule

    orig = pl.LightningModule.optimizer_step

    def optimizer_step(self, *args, **kwargs):
        orig(self, *args, **kwargs)
        if self.global_step == 3:  # the 4th update (global_step counts before the increment)
            with torch.no_grad():
                next(self.denoiser.parameters()).fill_(float("nan"))

    monkeypatch.setattr(DiffusionModule, "optimizer_step", optimizer_step)
    run = tmp_path / "run"
    args = ["debug=fast", "trainer.max_steps=6", "trainer.val_check_interval=3"]
    status, _, err = run_main("train.py", *args, f"hydra.run.dir={run}", root=tmp_path)
    assert_one_line_error(status, err, "became NaN/Inf")
    assert "last good checkpoint" in err and "DDP" not in err
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 3
    assert all(
        torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point()
    )
    assert not (run / "results.json").exists()
