"""Through the real CLI, as a user types it: train → checkpoint → sample / evaluate, and errors."""

import json

import pytest
import torch

from diffusion_lab.build import build, module_from_checkpoint
from diffusion_lab.checkpoint import LEGACY_STATISTICS_KEY
from diffusion_lab.cli.train import train
from diffusion_lab.sampling import generate_ema
from tests.conftest import run_cli, run_main

FAST = [
    "debug=fast",
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "callbacks.sample_grid.every_n_steps=2",
]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One real `python train.py debug=fast` run shared by the tests below."""
    cwd = tmp_path_factory.mktemp("cli")
    proc = run_cli("train.py", "debug=fast", f"hydra.run.dir={cwd}/run", cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd, cwd / "run"


def test_train_leaves_checkpoint_grids_and_results(trained_run):
    _, run = trained_run
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / ".hydra" / "config.yaml").is_file()
    assert sorted(p.name for p in (run / "samples").glob("step_*.png"))
    assert (run / "logs" / "metrics.csv").is_file()
    results = json.loads((run / "results.json").read_text())
    assert results["global_step"] == 6
    assert results["sampling"]["nfe"] == 3  # dpmpp (the default), 3 steps: one call each
    assert results["train_images_per_s"] > 0 and results["peak_memory_mb"] > 0
    assert results["choices"]["sampler"] == "dpmpp" and results["versions"]["torch"]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert any(k.startswith("ema.") for k in ckpt["state_dict"])


def test_sample_from_checkpoint_with_overrides(trained_run):
    cwd, run = trained_run
    args = [
        f"ckpt_path={run}/checkpoints/last.ckpt",
        "sampler=ddim",
        "num_steps=4",
        "num_samples=6",
        "seed=3",
        f"hydra.run.dir={cwd}/sample",
    ]
    proc = run_cli("sample.py", *args, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    x = torch.load(cwd / "sample" / "samples.pt", weights_only=True)
    assert x.shape == (6, 1, 16, 16) and torch.isfinite(x).all()
    assert (cwd / "sample" / "samples.png").is_file()
    assert json.loads((cwd / "sample" / "results.json").read_text())["nfe"] == 4


def test_restore_a_users_image(trained_run):
    """sample.py init_image=PATH start_t=T runs the reverse process from the user's image."""
    from PIL import Image

    cwd, run = trained_run
    Image.fromarray((torch.rand(20, 20) * 255).byte().numpy()).save(cwd / "degraded.png")
    args = [
        f"ckpt_path={run}/checkpoints/last.ckpt",
        f"init_image={cwd}/degraded.png",
        "start_t=0.5",
        "num_samples=2",
        f"hydra.run.dir={cwd}/restore",
    ]
    proc = run_cli("sample.py", *args, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((cwd / "restore" / "results.json").read_text())
    assert results["start_t"] == 0.5 and results["nfe"] < 2 * 3 - 1  # fewer steps than from t = 1
    status, _, err = run_main(
        "sample.py", f"ckpt_path={run}/checkpoints/last.ckpt", "init_image=missing.png", root=cwd
    )
    assert status == 2 and "init_image not found" in err


def test_evaluate_from_checkpoint(trained_run):
    """The CLI path (metrics themselves: test_evaluation.py); bits/dim on 8 images keeps it short."""
    cwd, run = trained_run
    proc = run_cli(
        "evaluate.py",
        f"ckpt_path={run}/checkpoints/last.ckpt",
        "metrics=[nll]",
        "evaluation.nll.num_images=8",
        f"hydra.run.dir={cwd}/eval",
        cwd=cwd,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((cwd / "eval" / "results.json").read_text())["metrics"]["test/loss_ema"] > 0


@pytest.mark.parametrize(
    "script, args, message",
    [
        ("train.py", ["sampler=nope"], "Could not find 'sampler/nope'"),
        ("train.py", ["backbone=mlp"], "backbone=mlp takes flat vectors"),
        (
            "train.py",
            ["dataset=mnist", "dataset.download=false"],
            "MNIST/raw/train-images-idx3-ubyte",
        ),
        ("sample.py", ["ckpt_path=nowhere.ckpt"], "checkpoint not found"),
    ],
)
def test_user_errors_are_clear(tmp_path, script, args, message):
    extra = "debug=fast" if script == "train.py" else "num_samples=1"
    status, out, err = run_main(script, *args, extra, root=tmp_path)
    assert status != 0
    assert message in err + out


def test_corrupt_and_foreign_checkpoints_are_rejected(trained_run, tmp_path):
    _, run = trained_run
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes((run / "checkpoints" / "last.ckpt").read_bytes()[:5000])
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    for path, message in [
        (truncated, "could not read checkpoint"),
        (foreign, "not a diffusion_lab checkpoint"),
    ]:
        status, _, err = run_main("sample.py", f"ckpt_path={path}", "num_samples=1", root=tmp_path)
        assert status == 2 and message in err


OBJECTIVES = ["denoising", "eps", "v"]
SAMPLERS = ["ancestral", "ddim", "euler", "heun"]


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_objective_and_sampler_trains_and_samples(make_cfg, objective, sampler):
    results = train(make_cfg(*FAST, f"objective={objective}", f"sampler={sampler}"))
    assert results["global_step"] == 2
    assert all(v == v for v in results["metrics"].values())  # no NaN
    module, _, cfg = module_from_checkpoint(results["checkpoint"])  # what sample.py does
    assert cfg.choices.sampler == sampler
    x, nfe = generate_ema(module, 2, seed=0)
    assert x.shape == (2, 1, 16, 16) and torch.isfinite(x).all() and nfe >= 3


@pytest.mark.parametrize(
    "overrides",
    [
        ["degradation=gaussian_ve", "schedule=edm", "objective/time=log_normal"],
        ["schedule=linear", "precond=eps", "objective=eps", "objective/time=stratified"],
        ["schedule=sigmoid", "precond=v", "objective/weighting=min_snr", "sampler/grid=log_snr"],
        ["precond=x0", "objective/weighting=uniform", "sampler=heun", "sampler.s_churn=10"],
        ["dataset=toy2d", "backbone=mlp", "sampler=ddim"],
        ["logger=tensorboard"],
        ["trainer.precision=bf16-mixed"],
        ["experiment=edm_digits"],
        ["experiment=ddpm_digits", "sampler.num_steps=5"],
    ],
    ids=[
        "ve_edm",
        "ddpm_eps",
        "sigmoid_v",
        "x0_churn",
        "toy2d",
        "tensorboard",
        "bf16",
        "edm",
        "ddpm",
    ],
)
def test_other_combinations_train(make_cfg, overrides):
    results = train(make_cfg(*FAST, *overrides))
    assert results["global_step"] == 2


def test_nan_losses_in_a_row_stop_with_advice(make_cfg, monkeypatch):
    from diffusion_lab.objectives import Denoising

    forward = Denoising.forward
    monkeypatch.setattr(
        Denoising, "forward", lambda self, *a, **k: forward(self, *a, **k) * torch.nan
    )
    cfg = make_cfg(*FAST, "callbacks.nonfinite_guard.max_consecutive=2")
    with pytest.raises(FloatingPointError, match="2 consecutive steps.*lower optim.optimizer.lr"):
        train(cfg)


@pytest.mark.slow
def test_default_training_learns(make_cfg):
    """300 steps of the main job's config: the EMA test loss falls from ~1.8 at init."""
    results = train(make_cfg("trainer.max_steps=300", "trainer.val_check_interval=300"))
    assert results["metrics"]["test/loss_ema"] < 0.5


CORRUPTIONS = [
    ["degradation=blur"],
    ["degradation=blur", "objective=denoising", "sampler=ddim"],
    ["degradation=blur", "sampler=sde"],
    ["degradation=blur_noise", "sampler=soft_naive"],
    ["degradation=blur_noise", "schedule=blur_w2", "objective=eps", "precond=eps", "sampler=pc"],
    ["degradation=blur_noise", "objective=v", "precond=v", "sampler=heun", "sampler/grid=uniform"],
    ["degradation=blur_noise", "objective=denoising", "sampler=ancestral"],
    ["degradation=mask"],
    ["degradation=mask", "objective=denoising", "sampler=ddim"],
    ["degradation=gud"],
    ["degradation=gud", "basis=pca", "degradation.order=variance"],
    [
        "degradation=gud",
        "basis=identity",
        "degradation.order=row",
        "degradation.softness=0.3",
        "sampler=ddim",
    ],
    ["degradation=gud", "basis=fourier", "sampler=pc"],
    ["degradation=cold_blur"],
    ["degradation=cold_blur", "sampler=cold_naive", "objective.norm=l2"],
    ["degradation=pixelate"],
    ["degradation=snow"],
]


def _no_data(*args, **kwargs):
    raise AssertionError("restoring a checkpoint read the dataset")


@pytest.mark.parametrize("overrides", CORRUPTIONS, ids=[" ".join(o) for o in CORRUPTIONS])
def test_every_corruption_trains_and_samples(make_cfg, monkeypatch, overrides):
    """Trains, and restores from its checkpoint alone: no raw data inside, none read, and the
    fitted state (bases, priors, tables) equal to what a build from the data gives."""
    results = train(make_cfg(*FAST, *overrides))
    assert results["global_step"] == 2 and all(v == v for v in results["metrics"].values())
    assert LEGACY_STATISTICS_KEY not in torch.load(results["checkpoint"], weights_only=True)
    with monkeypatch.context() as m:
        m.setattr("diffusion_lab.build.load_or_compute", _no_data)
        module, _, cfg = module_from_checkpoint(results["checkpoint"])
    fitted = build(cfg).process.state_dict()
    restored = module.process.state_dict()
    assert fitted.keys() == restored.keys()
    assert all(torch.equal(fitted[k], restored[k]) for k in fitted)
    if module.process.has_prior:
        x, _ = generate_ema(module, 2, seed=0)
        assert torch.isfinite(x).all()


def test_checkpoints_with_dataset_statistics_still_load(make_cfg, tmp_path):
    """Checkpoints written before fitted state moved into buffers carry the dataset statistics
    and lack the newer buffers (here BlurW2's table): they rebuild it from those statistics."""
    overrides = ["degradation=blur_noise", "schedule=blur_w2", "precond.per_component=true"]
    results = train(make_cfg(*FAST, *overrides))
    new, _, cfg = module_from_checkpoint(results["checkpoint"])
    ckpt = torch.load(results["checkpoint"], weights_only=True)
    for key in [k for k in ckpt["state_dict"] if ".schedule." in k]:
        del ckpt["state_dict"][key]
    ckpt[LEGACY_STATISTICS_KEY] = build(cfg).statistics.to_dict()
    torch.save(ckpt, tmp_path / "legacy.ckpt")
    old, _, _ = module_from_checkpoint(tmp_path / "legacy.ckpt")
    t = torch.linspace(0, 1, 33)
    assert torch.equal(old.process.schedule.sigma_blur(t), new.process.schedule.sigma_blur(t))
    assert torch.equal(old.denoiser.sigma_data, new.denoiser.sigma_data)
