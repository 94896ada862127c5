"""Scale through the real CLI on CPU: DDP (spawned and re-launched script), Hydra multirun grids,
the Optuna sweeper, the SLURM launcher config, mixed precision and the speed switches."""

import json
import os

import pytest
import torch
import yaml

from tests.conftest import compose_config, run_cli, run_main

FAST = ["debug=fast", "evaluation.metrics=[]"]


def _runs(sweep_dir):
    return sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())


def test_ddp_sim_ranks_draw_own_noise_and_replicas_stay_in_sync(tmp_path):
    run = tmp_path / "run"
    proc = run_cli(
        "train.py",
        *FAST,
        "trainer=ddp_sim",
        "callbacks.ddp_check.every_n_steps=3",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = json.loads((run / "ddp_check.json").read_text())
    assert [r["step"] for r in records] == [3, 6]
    for r in records:
        assert r["world_size"] == 2
        assert r["weights"][0] == r["weights"][1] and r["ema"][0] == r["ema"][1]  # bitwise
        assert r["noise"][0] != r["noise"][1]  # seed + global_rank
    assert records[0]["weights"] != records[1]["weights"]  # and they did train
    assert records[0]["ema"] != records[0]["weights"]
    # rank 0 alone logged and checkpointed
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert json.loads((run / "results.json").read_text())["global_step"] == 6


@pytest.mark.slow  # DDP (test_ddp_sim_...) and multirun (test_multirun_...) are each tested fast
def test_ddp_under_multirun_writes_one_directory_per_job(tmp_path):
    """strategy=ddp re-runs the script for rank 1; under -m that must not re-launch the sweep."""
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "train.py",
        "-m",
        *FAST,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "seed=1,2",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = _runs(sweep)
    assert [r.name for r in runs] == ["0", "1"]
    for run, seed in zip(runs, (1, 2)):
        assert json.loads((run / "results.json").read_text())["global_step"] == 6
        assert yaml.safe_load((run / ".hydra" / "config.yaml").read_text())["seed"] == seed
        assert (run / "train_ddp_process_1.log").exists()  # rank 1 ran in this job's directory
    assert not (tmp_path / "outputs").exists()  # no stray run directories from the workers


def test_multirun_grid_and_compare_runs(tmp_path):
    sweep = tmp_path / "grid"
    proc = run_cli(
        "train.py",
        "-m",
        *FAST,
        "trainer.max_steps=3",
        "degradation=gaussian,blur",
        "objective=denoising,soft_score",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = _runs(sweep)
    assert len(runs) == 4
    seen = set()
    for run in runs:
        results = json.loads((run / "results.json").read_text())
        seen.add((results["choices"]["degradation"], results["choices"]["objective"]))
    assert seen == {(d, o) for d in ("gaussian", "blur") for o in ("denoising", "soft_score")}

    proc = run_cli("scripts/compare_runs.py", str(sweep), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (sweep / "comparison.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| degradation=")]
    assert len(rows) == 4
    assert (sweep / "loss_curves.png").stat().st_size > 0


def test_optuna_sweep_of_two_trials(tmp_path):
    sweep = tmp_path / "optuna"
    proc = run_cli(
        "train.py",
        "hparams_search=optuna",
        *FAST,
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=1",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(_runs(sweep)) == 2
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    losses = [
        json.loads((run / "results.json").read_text())["metrics"]["val/loss_ema"]
        for run in _runs(sweep)
    ]
    assert best["best_value"] == pytest.approx(min(losses))
    assert "optim.optimizer.lr" in best["best_params"]


def test_unknown_optimized_metric_fails_a_sweep_and_only_a_sweep(tmp_path):
    """A sweep needs the value it optimises: a typo names what was reported (status 2). A single
    run does not: it finishes (status 0) with a note, its results.json intact."""
    args = [*FAST, "optimized_metric=fid_typo"]
    status, _, err = run_main(
        "train.py", "-m", *args, f"hydra.sweep.dir={tmp_path}/m", root=tmp_path
    )
    assert status == 2
    assert "optimized_metric=fid_typo" in err and "val/loss_ema" in err
    status, _, err = run_main("train.py", *args, f"hydra.run.dir={tmp_path}/r", root=tmp_path)
    assert status == 0 and "optimized_metric=fid_typo was not reported" in err
    assert (tmp_path / "r" / "results.json").is_file()


def test_slurm_launcher_takes_nodes_and_gpus_from_the_trainer(tmp_path):
    cfg = compose_config(
        "train",
        ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"],
        tmp_path,
        keep_hydra=True,
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)


@pytest.mark.parametrize(
    "overrides, precision",
    [(["trainer.precision=bf16-mixed"], "bf16-mixed"), (["channels_last=true"], "32-true")],
)
def test_precision_and_channels_last_switches_train(tmp_path, overrides, precision):
    run = tmp_path / "run"
    proc = run_cli("train.py", *FAST, *overrides, f"hydra.run.dir={run}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((run / "results.json").read_text())
    assert results["precision"] == precision
    assert torch.isfinite(torch.tensor(results["metrics"]["val/loss_ema"]))


def test_channels_last_needs_images(make_cfg):
    from diffusion_lab.build import ConfigError, build, build_module

    cfg = make_cfg("dataset=toy2d", "backbone=mlp", "channels_last=true")
    with pytest.raises(ConfigError, match="channels_last"):
        build_module(cfg, build(cfg))


@pytest.mark.slow  # inductor compiles on CPU: ~2 min on 2 cores
def test_compile_trains_and_keeps_checkpoint_keys(tmp_path):
    run = tmp_path / "run"
    proc = run_cli("train.py", *FAST, "compile=true", f"hydra.run.dir={run}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert not any("_orig_mod" in k for k in state)


def test_torchrun_recipe(tmp_path):
    """The README's torchrun recipe: torchrun starts the ranks, Lightning reads its environment."""
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import ROOT

    run = tmp_path / "run"
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node=2",
            str(ROOT / "train.py"),
            *FAST,
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            f"hydra.run.dir={run}",
        ],
        cwd=tmp_path,
        env={**os.environ, "DIFFUSION_LAB_ROOT": str(tmp_path), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = json.loads((run / "ddp_check.json").read_text())
    assert records[-1]["world_size"] == 2 and records[-1]["weights_equal"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # one directory for both ranks


def test_gradscaler_state_is_checkpointed_and_restored(make_cfg, tmp_path):
    """16-mixed keeps a GradScaler; its scale and growth tracker go into the checkpoint and come
    back on resume. (The CPU GradScaler stands in for the CUDA one: same Lightning plugin; the
    MLP on 2-D toy data, since float16 convolutions on a CPU take minutes.)"""
    import pytorch_lightning as pl
    from pytorch_lightning.plugins.precision import MixedPrecision

    from diffusion_lab.build import build, build_module

    cfg = make_cfg(*FAST, "dataset=toy2d", "backbone=mlp", "sampler=ddim")

    def fit(max_steps, ckpt_path=None):
        parts = build(cfg)
        plugin = MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu", init_scale=1024.0))
        trainer = pl.Trainer(
            accelerator="cpu",
            max_steps=max_steps,
            plugins=[plugin],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            limit_val_batches=0,
        )
        trainer.fit(build_module(cfg, parts), datamodule=parts.datamodule, ckpt_path=ckpt_path)
        return trainer, plugin.scaler

    trainer, scaler = fit(3)
    trainer.save_checkpoint(tmp_path / "a.ckpt")
    state = torch.load(tmp_path / "a.ckpt", weights_only=True)["MixedPrecision"]
    assert state["scale"] == scaler.get_scale() and state["_growth_tracker"] == 3
    _, resumed = fit(4, ckpt_path=tmp_path / "a.ckpt")
    assert resumed.get_scale() == scaler.get_scale()
    assert resumed.state_dict()["_growth_tracker"] == 4  # continued from 3, not from 0
