"""scripts/compare_runs.py on a synthetic multirun directory (no training: files written by hand)."""

import json

from PIL import Image

from tests.conftest import run_cli

COMMON = "trainer.max_steps=100"
CHOICES = {"dataset": "digits", "schedule": "cosine", "objective": "denoising", "sampler": "heun"}


def write_run(run, degradation, val, fid=None, results=True):
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(f"- degradation={degradation}\n- {COMMON}\n")
    (run / ".hydra" / "config.yaml").write_text("seed: 42\n")
    if not results:
        return
    (run / "logs").mkdir()
    rows = ["step,train/loss,val/loss,val/loss_ema,lr-AdamW"]
    for step in range(0, 100, 10):
        rows.append(f"{step},{1 / (step + 2)},,,0.001")
        rows.append(f"{step + 9},,{val * 2},{val * (1 + 1 / (step + 1))},")
    (run / "logs" / "metrics.csv").write_text("\n".join(rows) + "\n")
    evaluation = None
    if fid is not None:
        evaluation = {"fid_digits_2k": fid, "kid_digits_2k": fid / 1000, "kid_digits_2k_std": 0.1}
        evaluation.update({"real_fid_digits_180": 1.0, "bpd_180": 3.0 + fid / 100, "nfe": 35})
    results = {
        "metrics": {"val/loss_ema": val, "test/loss_ema": val * 1.1, "train/loss": 2 * val},
        "global_step": 100,
        "fit_seconds": 12.3456,
        "train_images_per_s": 345.678,
        "sampling": {"nfe": 35, "seconds": 1.5, "images_per_s": 42.0},
        "evaluation": evaluation,
        "device": "cpu",
        "choices": {"degradation": degradation, **CHOICES},
        "versions": {"python": "3.11"},
    }
    (run / "results.json").write_text(json.dumps(results))


def table_rows(markdown):
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines]


def test_multirun_table_plots_and_incomplete_run(tmp_path):
    multirun = tmp_path / "outputs" / "train" / "multirun_2024-01-01_00-00-00"
    write_run(multirun / "0", "gaussian", val=0.05, fid=20.0)
    write_run(multirun / "1", "blur", val=0.0312345, fid=15.5)
    write_run(multirun / "2", "mask", val=0.01, results=False)  # crashed: no results.json
    (multirun / "multirun.yaml").write_text("hydra: {}\n")
    evaluate = tmp_path / "outputs" / "evaluate" / "2024-01-02_00-00-00"
    evaluate.mkdir(parents=True)
    samplers = [
        {"sampler": name, "num_steps": n, "nfe": 2 * n - 1, "metrics": {"fid_digits_2k": f}}
        for name, base in (("heun", 10.0), ("euler", 14.0))
        for n, f in ((6, base + 5), (18, base))
    ]
    ckpt = multirun / "1" / "checkpoints" / "last.ckpt"
    (evaluate / "results.json").write_text(
        json.dumps({"ckpt_path": str(ckpt), "metrics": {}, "samplers": samplers})
    )
    out = tmp_path / "report"

    proc = run_cli(
        "scripts/compare_runs.py", str(multirun), str(evaluate), "--out", str(out), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    markdown = (out / "comparison.md").read_text()
    assert markdown in proc.stdout
    header, _, *rows = table_rows(markdown)
    # only the varying choice gets a column; _std, real_* and the shared overrides stay out
    assert header == [
        "run", "degradation", "val/loss_ema", "test/loss_ema", "fid_digits_2k", "kid_digits_2k",
        "bpd_180", "global_step", "fit_seconds", "train_images_per_s", "sampling/nfe",
    ]  # fmt: skip
    assert rows == [  # sorted by val/loss_ema, 4 significant digits
        ["degradation=blur", "blur", "0.03123", "0.03436", "15.5", "0.0155", "3.155", "100",
         "12.35", "345.7", "35"],
        ["degradation=gaussian", "gaussian", "0.05", "0.055", "20", "0.02", "3.2", "100",
         "12.35", "345.7", "35"],
    ]  # fmt: skip
    assert "2 completed runs" in markdown and "1 failed/incomplete" in markdown
    assert f"failed/incomplete (no results.json): {(multirun / '2').resolve()}" in markdown
    assert "degradation=mask" in markdown
    assert COMMON in markdown  # listed once as shared by every run
    # evaluate.py curves are named after the run that trained the checkpoint
    assert "`degradation=blur · heun`" in markdown and "`degradation=blur · euler`" in markdown
    for name in ("loss_curves.png", "metric_vs_nfe.png"):
        with Image.open(out / name) as img:
            img.verify()
            assert img.format == "PNG"

    # --metrics restricts the columns and the first one sorts: lower FID first, then missing
    proc = run_cli("scripts/compare_runs.py", str(multirun), "--metrics", "fid_digits_2k,global_step", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    header, _, *rows = table_rows((multirun / "comparison.md").read_text())
    assert header == ["run", "degradation", "fid_digits_2k", "global_step"]
    assert [r[0] for r in rows] == ["degradation=blur", "degradation=gaussian"]
    assert "metric_vs_nfe.png not drawn" in proc.stdout  # no evaluate.py results under this DIR

    # --metrics +k extends the defaults; keys a run lacks show as —
    proc = run_cli("scripts/compare_runs.py", str(multirun), "--metrics", "+real_fid_digits_180,val/nope", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    header, _, *rows = table_rows((multirun / "comparison.md").read_text())
    assert header[2] == "val/loss_ema" and header[-2:] == ["real_fid_digits_180", "val/nope"]
    assert [r[-2:] for r in rows] == [["1", "—"], ["1", "—"]]


def test_corrupt_results_are_reported_not_fatal(tmp_path):
    write_run(tmp_path / "runs" / "0", "gaussian", val=0.05)
    write_run(tmp_path / "runs" / "1", "blur", val=0.04)
    (tmp_path / "runs" / "1" / "results.json").write_text('{"metrics": {"val/loss_ema": 0.0')

    proc = run_cli("scripts/compare_runs.py", str(tmp_path / "runs"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 completed runs" in proc.stdout and "1 skipped" in proc.stdout
    assert "skipped unreadable results.json" in proc.stdout
    assert str((tmp_path / "runs" / "1" / "results.json").resolve()) in proc.stdout
    assert "| gaussian" not in proc.stdout  # one run: no varying choice column
    assert (tmp_path / "runs" / "loss_curves.png").exists()


def test_nothing_found_exits_2(tmp_path):
    (tmp_path / "crashed" / ".hydra").mkdir(parents=True)
    proc = run_cli("scripts/compare_runs.py", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2
    assert f"no results.json under {tmp_path}: is this a train.py run or multirun directory?" in (
        proc.stderr
    )
    assert "crashed" in proc.stderr
    assert not (tmp_path / "comparison.md").exists()
