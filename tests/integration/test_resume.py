"""Nothing lost: exact resume, SIGTERM pre-emption, atomic checkpoints, bad checkpoint files and
the NaN/Inf guard, through the real CLI where a user would meet them."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from diffusion_lab.io import atomic_torch_save
from tests.conftest import ROOT, compose_config, run_cli, run_main

# Exactness does not depend on the network's size: a small U-Net keeps these runs fast.
SMALL_NET = ["backbone.model_channels=8", "backbone.attn_resolutions=[]"]
# 5 batches of 256 per epoch (1437 training digits): 3 steps end mid-epoch, 7 cross an epoch
BIG_BATCH = [
    "debug=fast",
    "evaluation.metrics=[]",
    "dataset.batch_size=256",
    "trainer.val_check_interval=3",
    *SMALL_NET,
]


def _ckpt(run):
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def assert_same_training_state(a: dict, b: dict) -> None:
    """Weights, EMA, optimizer, LR schedule and step: bitwise equal."""
    assert a["global_step"] == b["global_step"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    sa, sb = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for k in sa[i]:
            assert torch.equal(torch.as_tensor(sa[i][k]), torch.as_tensor(sb[i][k])), (i, k)
    assert a["lr_schedulers"] == b["lr_schedulers"]


@pytest.mark.parametrize(
    "extra",
    [[], ["objective/time=importance", "objective.time.num_bins=8"]],
    ids=["uniform_t", "importance_t"],
)
def test_resume_mid_epoch_is_bitwise_exact(tmp_path, extra):
    """3 + 4 steps equal 7 straight. With objective/time=importance the loss history is state
    (buffers in the state_dict), and the run is past its warm-up at the split (8 bins × 10 losses
    < 256 images), so the resumed steps draw t from the restored history."""
    args = [*BIG_BATCH, *extra]
    straight, split = tmp_path / "straight", tmp_path / "split"
    for run, steps in ((straight, 7), (split, 3)):
        proc = run_cli(
            "train.py", *args, f"trainer.max_steps={steps}", f"hydra.run.dir={run}", cwd=tmp_path
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert _ckpt(split)["global_step"] == 3
    if extra:
        counts = _ckpt(split)["state_dict"]["objective.time.counts"]
        assert int(counts.sum()) == 3 * 256 and (counts >= 10).all()  # warm at the split
    proc = run_cli(
        "train.py",
        *args,
        "trainer.max_steps=7",
        f"ckpt_path={split}/checkpoints/last.ckpt",
        f"hydra.run.dir={tmp_path}/resumed",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = _ckpt(tmp_path / "resumed")
    assert_same_training_state(_ckpt(straight), resumed)
    if extra:
        assert int(resumed["state_dict"]["objective.time.counts"].sum()) == 7 * 256


def test_sigterm_saves_and_the_same_command_resumes_exactly(tmp_path):
    run = tmp_path / "run"
    args = [
        "debug=fast",
        "evaluation.metrics=[]",
        "trainer.max_steps=40",
        "trainer.val_check_interval=20",
        *SMALL_NET,
    ]
    cmd = [sys.executable, str(ROOT / "train.py"), *args, f"hydra.run.dir={run}"]
    env = {**os.environ, "DIFFUSION_LAB_ROOT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    grid = run / "samples" / "step_0000003.png"  # debug=fast saves a grid every 3 steps
    deadline = time.monotonic() + 120
    while not grid.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]  # stopped, not finished
    assert "SIGTERM: saved" in out
    stopped_at = _ckpt(run)["global_step"]
    assert 3 <= stopped_at < 40
    assert not (run / "results.json").exists()  # it stopped, it did not finish

    again = run_cli("train.py", *args, f"hydra.run.dir={run}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stdout
    straight = run_cli("train.py", *args, f"hydra.run.dir={tmp_path}/straight", cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert_same_training_state(_ckpt(tmp_path / "straight"), _ckpt(run))


@pytest.mark.parametrize(
    "make_bad, message",
    [
        (
            lambda good, bad: bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2]),
            "truncated",
        ),
        (
            lambda good, bad: torch.save({"weights": torch.zeros(2)}, bad),
            "not a diffusion_lab checkpoint",
        ),
        (
            lambda good, bad: torch.save({"obj": torch.nn.Linear(1, 1)}, bad),
            "could not read checkpoint",
        ),
        (lambda good, bad: None, "checkpoint not found"),
    ],
    ids=["truncated", "foreign", "pickled-object", "missing"],
)
def test_bad_checkpoints_are_rejected_with_a_message(tmp_path, make_bad, message, trained_ckpt):
    bad = tmp_path / "bad.ckpt"
    make_bad(trained_ckpt, bad)
    status, _, err = run_main(
        "train.py", "debug=fast", f"ckpt_path={bad}", f"hydra.run.dir={tmp_path}/r", root=tmp_path
    )
    assert status == 2
    assert message in err and "Traceback" not in err


def test_resume_with_another_model_config_is_refused(tmp_path, trained_ckpt):
    status, _, err = run_main(
        "train.py",
        "debug=fast",
        "backbone.model_channels=16",
        f"ckpt_path={trained_ckpt}",
        f"hydra.run.dir={tmp_path}/r",
        root=tmp_path,
    )
    assert status == 2
    assert "different `backbone` config" in err and "overrides.yaml" in err


@pytest.fixture(scope="module")
def trained_ckpt(tmp_path_factory):
    from diffusion_lab.cli.train import train

    out = tmp_path_factory.mktemp("trained")
    return Path(
        train(compose_config("train", ["debug=fast", "evaluation.metrics=[]"], out))["checkpoint"]
    )


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"step": 1}, path)

    def dies_halfway(obj, f):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # a kill during the write

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary left behind


@pytest.mark.parametrize(
    "monitor",
    [
        # improves once (its first value), never again: ModelCheckpoint alone leaves last.ckpt there
        ["callbacks.model_checkpoint.monitor=train/skipped_steps"],
        # a val loss that is "better" only when larger: after the first validation, never
        ["callbacks.model_checkpoint.mode=max"],
    ],
    ids=["constant_monitor", "monitor_never_improves"],
)
def test_last_ckpt_is_the_final_state_whatever_the_monitor(make_cfg, monitor):
    """max_steps=7 is off the validation grid (3, 6): last.ckpt must still hold step 7, and
    results.json's step is the checkpoint's (DESIGN §4)."""
    from diffusion_lab.cli.train import train

    cfg = make_cfg("debug=fast", "trainer.max_steps=7", "trainer.val_check_interval=3", *monitor)
    results = train(cfg)
    last = torch.load(results["checkpoint"], weights_only=True)
    assert last["global_step"] == results["global_step"] == 7
    best = [p for p in os.listdir(os.path.dirname(results["checkpoint"])) if p.startswith("best")]
    assert best and all(int(p[5:12]) < 7 for p in best)  # the monitor kept an older one


def test_a_nan_step_is_skipped_counted_and_training_goes_on(make_cfg, monkeypatch):
    """One NaN loss at step 2: that step leaves the weights untouched, the run finishes."""
    import pytorch_lightning as pl

    from diffusion_lab.build import build, build_module
    from diffusion_lab.callbacks import NonFiniteGuard
    from diffusion_lab.objectives import Denoising

    forward = Denoising.forward
    steps_seen = []

    def nan_at_step_2(self, *args, **kwargs):
        loss = forward(self, *args, **kwargs)
        return loss * torch.nan if len(steps_seen) == 2 else loss

    monkeypatch.setattr(Denoising, "forward", nan_at_step_2)
    cfg = make_cfg("debug=fast", "evaluation.metrics=[]")
    parts = build(cfg)
    module = build_module(cfg, parts)
    guard = NonFiniteGuard(max_consecutive=2)
    snapshots = {}

    class Snapshot(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            snapshots[trainer.global_step] = [
                p.detach().clone() for p in pl_module.denoiser.parameters()
            ]

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            steps_seen.append(trainer.global_step)

    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=5,
        callbacks=[guard, Snapshot()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule=parts.datamodule)
    assert trainer.global_step == 5 and guard.skipped == 1 and guard.in_a_row == 0
    after_bad = snapshots[3]
    assert all(torch.equal(a, b) for a, b in zip(snapshots[2], after_bad))  # step 2 skipped
    assert not all(torch.equal(a, b) for a, b in zip(snapshots[1], snapshots[2]))  # others not
    assert all(torch.isfinite(p).all() for p in module.denoiser.parameters())
    assert trainer.callback_metrics["train/skipped_steps"] == 1


IMPORTANCE = ["objective/time=importance", "objective.time.num_bins=4"]


@pytest.mark.slow  # ~90 s each: three 2-rank launches; resume (above) and DDP (test_scale) are fast
@pytest.mark.parametrize("extra", [[], IMPORTANCE], ids=["uniform_t", "importance_t"])
def test_resume_under_ddp_is_exact(tmp_path, extra):
    """ddp_spawn, 2 ranks: 3 + resume 3 steps equals 6 straight (each rank's noise and data shard
    are functions of the step, so nothing per-rank needs saving). With importance-sampled t the
    ranks all-gather their losses, so every rank holds the checkpoint's (rank 0's) history
    (4 bins × 10 losses: warm after a few steps)."""
    args = [
        "debug=fast",
        "evaluation.metrics=[]",
        "trainer=ddp_sim",
        "trainer.val_check_interval=3",
        *extra,
        *SMALL_NET,
    ]
    for run, steps in (("straight", 6), ("split", 3), ("split", 6)):
        proc = run_cli(
            "train.py",
            *args,
            f"trainer.max_steps={steps}",
            f"hydra.run.dir={tmp_path}/{run}",
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming from" in proc.stdout
    straight = _ckpt(tmp_path / "straight")
    if extra:
        assert int(straight["state_dict"]["objective.time.counts"].sum()) == 6 * 2 * 16
    assert_same_training_state(straight, _ckpt(tmp_path / "split"))
