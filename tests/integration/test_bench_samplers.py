"""scripts/bench_samplers.py: every sampler with the exact mixture denoiser, errors beside the floor."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_samplers.py"


def test_bench_samplers_reports_every_sampler_and_grid(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_samplers", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert (
        bench.main(
            [
                "--dim",
                "4",
                "--num",
                "400",
                "--seeds",
                "1",
                "--nfe",
                "4",
                "40",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    out = json.loads((tmp_path / "results.json").read_text())
    rows = out["rows"]
    assert len(rows) == 2 * len(bench.SAMPLERS) * len(bench.GRIDS)
    assert {r["nfe"] for r in rows if r["sampler"] == "heun"} == {3, 39}  # 2N − 1 calls
    assert {r["nfe"] for r in rows if r["sampler"] != "heun"} == {4, 40}
    # the exact denoiser with 40 steps of the reverse SDE lands near the floor of 400 samples
    sde = next(r for r in rows if (r["sampler"], r["grid"], r["nfe"]) == ("sde", "uniform", 40))
    assert sde["sliced_w2"] < 2.5 * out["floor"]["sliced_w2"]
    printed = capsys.readouterr().out
    assert "| 40 | ddim | uniform |" in printed and "| 40 | best sampler" not in printed
    assert "| 40 | " in printed.split("best sampler / grid")[1]  # the summary has a row per NFE
    # the adaptive sampler spends more calls on a tighter tolerance
    nfes = [r["nfe"] for r in out["adaptive"]]
    assert nfes == sorted(nfes) and nfes[0] < nfes[-1]
