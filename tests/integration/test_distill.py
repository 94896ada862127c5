"""distill.py through the real CLI (in-process, as a user types it): a tiny teacher, distillation
rounds, their checkpoints sampled by sample.py and evaluated by evaluate.py, exact resume of an
interrupted round, crafted targets in distilled checkpoints refused, and one-line user errors."""

import json
from pathlib import Path

import pytest
import torch

from diffusion_lab.build import module_from_checkpoint
from diffusion_lab.checkpoint import CONFIG_KEY, CheckpointError
from diffusion_lab.cli.train import train
from diffusion_lab.distill.module import ROUND_KEY, TARGET_KEY
from tests import conftest
from tests.conftest import compose_config, run_main

pytestmark = pytest.mark.usefixtures("one_thread")
conftest.ENTRY_POINTS.setdefault("distill.py", "diffusion_lab.cli.distill")

TEACHER = ["debug=fast", "trainer.max_steps=2", "trainer.val_check_interval=2"]
SMALL = ["batch_size=8", "num_samples=2", "trainer.val_check_interval=2", "val_num_t=1"]
SMALL += ["callbacks.sample_grid.num_samples=2", "trainer.limit_val_batches=1"]


def _teacher(out: Path, *overrides) -> Path:
    return Path(train(compose_config("train", [*TEACHER, *overrides], out))["checkpoint"])


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    return _teacher(tmp_path_factory.mktemp("teacher"))


def distill(root: Path, teacher: Path, run: str, *args, small=SMALL) -> tuple[int, str, str]:
    args = [f"ckpt_path={teacher}", *small, *args, f"hydra.run.dir={root / run}"]
    return run_main("distill.py", *args, root=root)


@pytest.fixture(scope="module")
def pd_run(teacher, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pd")
    args = ["distill.teacher_steps=4", "distill.rounds=2", "distill.steps_per_round=2"]
    status, _, err = distill(root, teacher, "pd", *args)
    assert status == 0, err[-3000:]
    return root


@pytest.fixture(scope="module")
def cd_run(teacher, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cd")
    status, _, err = distill(
        root, teacher, "cd", "distill=consistency", "distill.steps_per_round=2"
    )
    assert status == 0, err[-3000:]
    return root


def _ckpt(root: Path, run: str, k: int, steps: int) -> Path:
    return root / run / f"round{k}_{steps}steps" / "checkpoints" / "last.ckpt"


def _sample(root: Path, ckpt: Path, *args) -> dict:
    out = root / f"sample_{len(list(root.glob('sample_*')))}"
    status, _, err = run_main(
        "sample.py", f"ckpt_path={ckpt}", "num_samples=3", *args, f"hydra.run.dir={out}", root=root
    )
    assert status == 0, err[-3000:]
    return json.loads((out / "results.json").read_text())


def test_each_round_writes_a_checkpoint_sampled_with_its_steps(pd_run, teacher):
    results = json.loads((pd_run / "pd" / "results.json").read_text())
    assert [r["num_steps"] for r in results["rounds"]] == [2, 1]
    for k, steps in [(0, 2), (1, 1)]:
        path = _ckpt(pd_run, "pd", k, steps)
        ckpt = torch.load(path, weights_only=True)
        sampler = ckpt[CONFIG_KEY]["sampler"]
        assert sampler["_target_"].endswith("ddim.ddim") and sampler["num_steps"] == steps
        assert sampler["eta"] == 0 and sampler["grid"]["_target_"].endswith("grids.uniform")
        assert ckpt[CONFIG_KEY]["distill_round"]["index"] == ckpt[ROUND_KEY] == k
        assert not any(key.startswith("teacher.") for key in ckpt["state_dict"])  # not saved
        assert ckpt["global_step"] == 2
        facts = _sample(pd_run, path)
        assert facts["nfe"] == steps and facts["sampler"]["num_steps"] == steps
    # round 1 is taught by round 0's checkpoint; round 0 by the teacher
    assert results["rounds"][1]["teacher"] == str(_ckpt(pd_run, "pd", 0, 2))
    stored = torch.load(_ckpt(pd_run, "pd", 0, 2), weights_only=True)[CONFIG_KEY]
    assert stored["distill_round"]["teacher_ckpt"] == str(teacher.resolve())


def test_a_round_is_evaluated_by_evaluate_py(pd_run):
    out = pd_run / "evaluate"
    args = [f"ckpt_path={_ckpt(pd_run, 'pd', 1, 1)}", "metrics=[]", f"hydra.run.dir={out}"]
    status, _, err = run_main("evaluate.py", *args, root=pd_run)
    assert status == 0, err[-3000:]
    assert "test/loss_ema" in json.loads((out / "results.json").read_text())["metrics"]


def test_the_student_starts_as_the_teacher_and_the_teacher_stays_frozen(teacher, tmp_path):
    """Zero learning rate: the student (and its EMA) after a round are the teacher's EMA weights.
    (Also the defaults: batch_size=null takes the teacher run's batch size.)"""
    status, _, err = distill(
        tmp_path,
        teacher,
        "lr0",
        "distill.teacher_steps=2",
        "distill.rounds=1",
        "distill.steps_per_round=1",
        "optim.optimizer.lr=1e-30",
        small=[s for s in SMALL if not s.startswith("batch_size")],
    )
    assert status == 0, err[-3000:]
    student = torch.load(_ckpt(tmp_path, "lr0", 0, 1), weights_only=True)["state_dict"]
    before = torch.load(teacher, weights_only=True)["state_dict"]
    for key, value in before.items():
        if key.startswith("ema."):
            assert torch.allclose(student[key], value), key
            assert torch.allclose(student["denoiser." + key[4:]], value, atol=1e-20), key


def test_consistency_checkpoint_samples_in_1_2_4_steps(cd_run):
    path = _ckpt(cd_run, "cd", 0, 1)
    ckpt = torch.load(path, weights_only=True)
    config = ckpt[CONFIG_KEY]
    assert config["sampler"]["_target_"].endswith("consistency.consistency")
    assert config["precond"]["_target_"].endswith("ConsistencyPrecond")
    assert config["choices"]["sampler"] == "consistency"
    assert ckpt[TARGET_KEY] and not any(k.startswith("target_net.") for k in ckpt["state_dict"])
    module, _, _ = module_from_checkpoint(path)  # the allowlist accepts what distill.py stores
    assert type(module.ema.precond).__name__ == "ConsistencyPrecond"
    for steps in (1, 2, 4):
        assert _sample(cd_run, path, f"num_steps={steps}")["nfe"] == steps


@pytest.mark.parametrize("method", ["progressive", "consistency"])
def test_an_interrupted_round_resumes_exactly(teacher, tmp_path, method):
    """2 steps, then the same run rerun to 4 steps, equals 4 steps straight (weights, EMA, θ⁻)."""
    args = [f"distill={method}"]
    if method == "progressive":
        args += ["distill.teacher_steps=2", "distill.rounds=1"]
    assert distill(tmp_path, teacher, "split", *args, "distill.steps_per_round=2")[0] == 0
    status, out, err = distill(tmp_path, teacher, "split", *args, "distill.steps_per_round=4")
    assert status == 0, err[-3000:]
    assert "resuming from" in out and "at step 2" in out
    assert distill(tmp_path, teacher, "whole", *args, "distill.steps_per_round=4")[0] == 0
    split, whole = (
        torch.load(_ckpt(tmp_path, run, 0, 1), weights_only=True) for run in ("split", "whole")
    )
    assert split["global_step"] == whole["global_step"] == 4
    for key, value in whole["state_dict"].items():
        assert torch.equal(split["state_dict"][key], value), key
    for key, value in (whole.get(TARGET_KEY) or {}).items():
        assert torch.equal(split[TARGET_KEY][key], value), key
    # a finished round is skipped on a rerun
    status, out, _ = distill(tmp_path, teacher, "whole", *args, "distill.steps_per_round=4")
    assert status == 0 and "done at step 4" in out


def touch(marker: Path) -> dict:
    """Instantiated, this would create `marker` (as in test_untrusted_checkpoint)."""
    return {
        "_target_": "pathlib.Path.touch",
        "_args_": [{"_target_": "pathlib.Path", "_args_": [str(marker)]}],
    }


@pytest.mark.parametrize(
    "run, key, words",
    [
        ("pd", "distill", "distill._target_=pathlib.Path.touch"),
        ("pd", "sampler", "sampler._target_=pathlib.Path.touch"),
        ("cd", "precond", "precond._target_=pathlib.Path.touch"),
        ("cd", "distill_round", "distill_round._target_=pathlib.Path.touch"),
    ],
)
def test_crafted_targets_in_distilled_checkpoints_are_refused(
    pd_run, cd_run, tmp_path, run, key, words
):
    root = pd_run if run == "pd" else cd_run
    ckpt = torch.load(_ckpt(root, run, 0, 2 if run == "pd" else 1), weights_only=True)
    marker = tmp_path / "pwned"
    ckpt[CONFIG_KEY][key] = touch(marker)
    path = tmp_path / "crafted.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="refusing the config") as err:
        module_from_checkpoint(path)
    assert words in str(err.value) and "\n" not in str(err.value)
    status, _, stderr = run_main(
        "sample.py", f"ckpt_path={path}", f"hydra.run.dir={tmp_path / 's'}", root=tmp_path
    )
    assert status == 2 and words in stderr and not marker.exists()
    # a crafted checkpoint as the teacher is refused the same way
    status, _, stderr = distill(tmp_path, path, "d")
    assert status == 2 and words in stderr and not marker.exists()


@pytest.fixture(scope="module")
def wrong_teachers(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("wrong")
    return {
        "blur": _teacher(root / "blur", "degradation=blur"),
        "eps": _teacher(root / "eps", "precond=eps", "objective=eps"),
    }


@pytest.mark.parametrize(
    "teacher_kind, args, words",
    [
        ("good", ["distill.teacher_steps=6", "distill.rounds=2"], "distill.teacher_steps=6"),
        ("good", ["distill=consistency", "distill.solver=rk4"], "distill.solver='rk4'"),
        ("good", ["batch_size=0"], "batch_size=0 is not valid"),
        ("blur", [], "has degradation=blur. Distil a gaussian"),
        ("eps", ["distill=consistency"], "precond=eps. Use a precond=edm teacher"),
        (None, [], "ckpt_path"),
    ],
)
def test_user_errors_are_one_line(teacher, wrong_teachers, tmp_path, teacher_kind, args, words):
    path = {"good": teacher, None: "???"}.get(teacher_kind) or wrong_teachers[teacher_kind]
    status, _, err = distill(tmp_path, path, "bad", *args)
    assert status == 2 and words in err and err.count("\n") == 1, err[-2000:]
