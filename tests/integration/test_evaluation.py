"""Evaluation through the real entry points: metrics during training, the final report, evaluate.py.

Small counts keep this fast; the numbers are checked for shape and sense, not quality.
"""

import json

import pytest

from tests.conftest import run_cli

EVAL = [
    "evaluation.metrics=[fid,kid,nll]",
    "evaluation.num_samples=40",
    "evaluation.kid_subset_size=20",
    "evaluation.batch_size=20",
    "evaluation.nll.num_images=4",
    "evaluation.nll.rtol=1e-3",
    "evaluation.nll.atol=1e-3",
]


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory):
    """`train.py debug=fast` with FID/KID/bits-dim every 3 steps and the best checkpoint by FID."""
    cwd = tmp_path_factory.mktemp("eval")
    args = [
        "debug=fast",
        *EVAL,
        "callbacks.evaluation.every_n_steps=3",
        "callbacks.model_checkpoint.monitor=val/fid_digits_40",
        f"hydra.run.dir={cwd}/run",
    ]
    proc = run_cli("train.py", *args, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd, cwd / "run"


def test_training_reports_metrics_floor_and_selects_best_by_fid(evaluated_run):
    cwd, run = evaluated_run
    results = json.loads((run / "results.json").read_text())
    ev = results["evaluation"]
    assert ev["nfe"] == 3 and ev["skipped"] == {}  # dpmpp (the default), 3 steps
    assert ev["fid_digits_40"] > 0 and "kid_digits_40" in ev
    assert ev["extractor_accuracy"] > 0.9  # the digits classifier behind the features
    # the real-vs-real floor sits beside it: 40 test images against the training split
    assert 0 <= ev["real_fid_digits_40"] < ev["fid_digits_40"]
    assert 6 < ev["bpd_4"] < 20 and ev["bpd_4_nfe"] > 0  # untrained: near the 8-bit range
    assert "val/fid_digits_40" in results["metrics"] and "val/bpd_4" in results["metrics"]
    best = sorted((run / "checkpoints").glob("best-*.ckpt"))
    assert len(best) == 1
    # the classifier and the reference features are cached for the next run
    assert list((cwd / ".cache" / "diffusion_lab").glob("classifier-*.pt"))


def test_evaluate_compares_samplers_and_plots(evaluated_run):
    cwd, run = evaluated_run
    args = [
        f"ckpt_path={run}/checkpoints/last.ckpt",
        *EVAL,
        "metrics=[fid,nll]",
        "samplers=[heun,euler]",
        "num_steps=[2,3]",
        f"hydra.run.dir={cwd}/evaluate",
    ]
    proc = run_cli("evaluate.py", *args, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((cwd / "evaluate" / "results.json").read_text())
    nfe = {(r["sampler"], r["num_steps"]): r["nfe"] for r in results["samplers"]}
    assert nfe == {("heun", 2): 3, ("heun", 3): 5, ("euler", 2): 2, ("euler", 3): 3}
    assert all(r["metrics"]["fid_digits_40"] > 0 for r in results["samplers"])
    assert "real_fid_digits_40" in results["real_floor"]
    assert results["likelihood"]["bpd_4"] > 0 and "test/loss_ema" in results["metrics"]
    assert (cwd / "evaluate" / "metric_vs_nfe.png").is_file()


def test_evaluate_rejects_unknown_metric(evaluated_run):
    cwd, run = evaluated_run
    args = [f"ckpt_path={run}/checkpoints/last.ckpt", "metrics=[fid,precision]"]
    proc = run_cli("evaluate.py", *args, f"hydra.run.dir={cwd}/bad", cwd=cwd)
    assert proc.returncode == 2 and "unknown ['precision']" in proc.stderr


def test_offline_inception_error_says_what_to_do(evaluated_run, tmp_path):
    cwd, run = evaluated_run
    missing = tmp_path / "pt_inception-2015-12-05.pth"
    args = [
        f"ckpt_path={run}/checkpoints/last.ckpt",
        *EVAL,
        "metrics=[fid]",
        "evaluation.extractor=inception",
        f"evaluation.inception_weights={missing}",
        f"hydra.run.dir={cwd}/inception",
    ]
    proc = run_cli("evaluate.py", *args, cwd=cwd)
    assert proc.returncode == 2 and str(missing) in proc.stderr  # fails cleanly, no traceback
    assert "evaluation.inception_weights=" in proc.stderr and "Traceback" not in proc.stderr
