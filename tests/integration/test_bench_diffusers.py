"""scripts/bench_diffusers.py at a tiny size: both sides sample, counts and NFE are reported sanely.

No speed ratio is asserted (DESIGN §7: speed targets live in the benchmark, not in timed tests).
"""

import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_diffusers.py"


@pytest.fixture(scope="module")
def bench():
    pytest.importorskip("diffusers")
    spec = importlib.util.spec_from_file_location("bench_diffusers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(bench, tmp_path, *args):
    path = tmp_path / "bench.json"
    code = bench.main(["--batch", "2", "--nfe", "3", "--repeats", "2", "--json", str(path), *args])
    return code, json.loads(path.read_text())


@pytest.mark.parametrize(("dataset", "side"), [("digits", 16), ("mnist", 32)])
def test_bench_diffusers_reports_both_sides(bench, tmp_path, capsys, dataset, side):
    code, out = _run(bench, tmp_path, "--dataset", dataset)
    assert code == 0
    assert out["shape"] == [1, side, side] and out["batch"] == 2
    assert out["nfe_ours"] == out["nfe_theirs"] == 3  # network calls counted on both sides
    for key in ("images_per_s_ours", "images_per_s_theirs", "ratio", "ratio_best"):
        assert math.isfinite(out[key]) and out[key] > 0, key
    assert len(out["seconds_ours"]) == len(out["seconds_theirs"]) == 2
    assert out["ratio"] == pytest.approx(out["images_per_s_ours"] / out["images_per_s_theirs"])
    # the default backbone (configs/backbone/unet.yaml) against a matched UNet2DModel
    assert out["params_ours"] > 1_000_000
    assert abs(out["params_theirs"] / out["params_ours"] - 1) <= bench.PARAM_TOLERANCE
    config = out["diffusers_config"]
    assert config["block_out_channels"] == [32, 64, 64] and config["layers_per_block"] == 1
    attention_level = [16, 8, 4].index(8) if side == 16 else [32, 16, 8].index(8)
    assert config["down_block_types"][attention_level] == "AttnDownBlock2D"
    assert sum(t.startswith("Attn") for t in config["down_block_types"]) == 1
    assert out["torch"] and out["diffusers"] and out["threads"] >= 1
    printed = capsys.readouterr().out
    assert f"| {dataset} 1×{side}×{side} |" in printed and "| 2 | 3 / 3 |" in printed
    assert "ratio ours/diffusers:" in printed


def test_bench_diffusers_refuses_unmatched_parameter_counts(bench, tmp_path, monkeypatch):
    """The count check is live: with a 1 % tolerance the +4 % diffusers network fails it."""
    monkeypatch.setattr(bench, "PARAM_TOLERANCE", 0.01)
    code, out = _run(bench, tmp_path)
    assert code == 1 and out["param_tolerance"] == 0.01
