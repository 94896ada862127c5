"""`logger=wandb` through the real entry points, offline (no network, no login, no prompt).

What wandb 0.31 writes offline, under `<run dir>/wandb/offline-run-<time>-<id>/`: the binary
`run-<id>.wandb` (run record with name, group, tags; config; history), `files/media/images/*.png`
for logged images and `files/media/table/*.table.json` for tables; there is no `files/config.yaml`
until `wandb sync`. The .wandb file is read here with wandb's own protobuf `Record`.
"""

import json
import struct
from pathlib import Path

import pytest

from tests.conftest import run_cli

EVAL = [
    "metrics=[fid]",
    "evaluation.num_samples=40",
    "evaluation.batch_size=20",
    "samplers=[heun,euler]",
    "num_steps=[2]",
]


def no_login(home: Path) -> dict:
    """Environment without any W&B credentials: no key, an empty home, no netrc."""
    home.mkdir(parents=True, exist_ok=True)
    return {
        "WANDB_API_KEY": "",
        "HOME": str(home),
        "NETRC": str(home / ".netrc"),
        "WANDB_CONFIG_DIR": str(home / ".config" / "wandb"),
    }


def offline_run(save_dir: Path) -> Path:
    runs = sorted((save_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    return runs[0]


def read_records(run_dir: Path) -> list:
    """The protobuf records of an offline run's `.wandb` file (LevelDB-log framing, 32 KiB
    blocks, 7-byte record headers; after a 7-byte ':W&B' file header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_dir.glob("run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, chunk, pos, block = [], b"", 7, 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the rest of a block is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        chunk += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = pb.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


def run_config(records) -> dict:
    config = {}
    for r in records:
        kind = r.WhichOneof("record_type")
        if kind in ("run", "config"):
            for item in (r.run.config if kind == "run" else r.config).update:
                config[item.key] = json.loads(item.value_json)
    return config


@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory):
    """`train.py debug=fast logger=wandb` with WANDB_MODE=offline."""
    cwd = tmp_path_factory.mktemp("wandb")
    env = {**no_login(cwd / "home"), "WANDB_MODE": "offline"}
    proc = run_cli(
        "train.py", "debug=fast", "logger=wandb", f"hydra.run.dir={cwd}/run", cwd=cwd, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd, cwd / "run", proc


def test_offline_run_has_name_tags_config_and_sample_grids(wandb_run):
    cwd, run, proc = wandb_run
    assert f"wandb sync {run}/wandb/offline-run-*" in proc.stdout  # says how to upload
    wb = offline_run(run)
    records = read_records(wb)
    (info,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert info.project == "diffusion_lab" and info.job_type == "train"
    assert info.display_name.startswith("gaussian-denoising-")  # + the run directory's time
    assert set(info.tags) == {"digits", "gaussian", "cosine", "unet", "denoising", "dpmpp"}
    assert not info.run_group  # single run: no group
    # the full resolved config (train.py logs it to every logger)
    config = run_config(records)
    assert config["choices"]["degradation"] == "gaussian"
    assert config["trainer"]["max_steps"] == 6 and config["paths"]["output_dir"] == str(run)
    # sample grids at steps 3 and 6 (debug=fast: every 3 steps)
    images = sorted((wb / "files" / "media" / "images").glob("samples_*.png"))
    assert len(images) == 2


def test_multirun_without_login_falls_back_to_offline_and_groups_the_sweep(tmp_path, monkeypatch):
    """No WANDB_MODE, no API key, no netrc: offline runs and the sync hint, never a prompt; a
    sweep's jobs get one run each, grouped by the sweep directory's name."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    sweep = tmp_path / "multirun_test"
    proc = run_cli(
        "train.py",
        "-m",
        "debug=fast",
        "logger=wandb",
        "trainer.max_steps=3",
        "objective=denoising,eps",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        env=no_login(tmp_path / "home"),
        timeout=180,  # a login prompt would hang until this kills it
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job, objective in enumerate(["denoising", "eps"]):
        assert f"no W&B login found, writing an offline run under {sweep / str(job)}" in proc.stdout
        assert f"wandb sync {sweep / str(job)}/wandb/offline-run-*" in proc.stdout
        wb = offline_run(sweep / str(job))
        (info,) = [r.run for r in read_records(wb) if r.WhichOneof("record_type") == "run"]
        assert info.run_group == "multirun_test" and info.display_name.endswith(f"-{job}")
        assert info.display_name.startswith(f"gaussian-{objective}-") and objective in info.tags
        assert run_config(read_records(wb))["choices"]["objective"] == objective
        assert list((wb / "files" / "media" / "images").glob("samples_*.png"))


def test_explicit_online_without_login_stops_instead_of_prompting(tmp_path, monkeypatch):
    from diffusion_lab.loggers import wandb_mode

    for key, value in no_login(tmp_path / "home").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("WANDB_MODE", "online")
    with pytest.raises(ValueError, match="no W&B login found"):
        wandb_mode(None, tmp_path)
    monkeypatch.delenv("WANDB_MODE")
    assert wandb_mode(True, tmp_path) == "offline"
    assert wandb_mode(None, tmp_path) == "offline"


def test_evaluate_logs_metric_vs_nfe_table(wandb_run):
    cwd, run, _ = wandb_run
    args = [f"ckpt_path={run}/checkpoints/last.ckpt", *EVAL, "logger=wandb"]
    env = {**no_login(cwd / "home"), "WANDB_MODE": "offline"}
    proc = run_cli("evaluate.py", *args, f"hydra.run.dir={cwd}/evaluate", cwd=cwd, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    wb = offline_run(cwd / "evaluate")
    (table,) = (wb / "files" / "media" / "table").glob("metric_vs_nfe_*.table.json")
    table = json.loads(table.read_text())
    assert table["columns"][:3] == ["sampler", "num_steps", "nfe"]
    assert "fid_digits_40" in table["columns"]
    assert sorted(row[:3] for row in table["data"]) == [["euler", 2, 2], ["heun", 2, 3]]
    assert list((wb / "files" / "media" / "images").glob("metric_vs_nfe_*.png"))
    records = read_records(wb)
    (info,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert info.job_type == "evaluate" and "gaussian" in info.tags
