"""scripts/bench_corruptions.py's table from hand-written results (no training)."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_corruptions.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_corruptions", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def evals(fids, nfe=50, fewer=()):
    out = []
    for i, fid in enumerate(fids):
        res = {
            "samplers": [
                {
                    "nfe": nfe,
                    "seconds": 10.0 + i,
                    "metrics": {
                        "fid_digits_2k": fid,
                        "kid_digits_2k": fid / 100,
                        "kid_digits_2k_std": 9.0,
                    },
                }
            ]
        }
        if i == 0:
            res["real_floor"] = {"real_fid_digits_180": 0.8, "real_kid_digits_180": 0.001}
        out.append((f"seed{i}", res))
    if fewer:
        rows = [{"nfe": n, "seconds": 1.0, "metrics": {"fid_digits_2k": f}} for n, f in fewer]
        out.append(("seed0_fewer_steps", {"samplers": rows}))
    return out


def test_rows_average_seeds_and_the_table_marks_the_targets(bench):
    train = {"fit_seconds": 300.0, "evaluation": {"bpd_180": 2.5, "bpd_180_nfe": 100}}
    gauss = bench.summarize("gaussian", None, "ref", train, evals([0.1, 0.12, 0.14]), "g.ckpt")
    assert gauss["fid_digits_2k"] == pytest.approx(0.12)
    assert gauss["fid_digits_2k_spread"] == pytest.approx(0.02)  # sample sd of 0.10, 0.12, 0.14
    assert gauss["bpd"] == 2.5 and gauss["nfe"] == 50 and gauss["sampling_seconds"] == 11.0
    blur = bench.summarize(
        "blur", 1.5, "claim", {"fit_seconds": 1.0}, evals([0.2, 0.2, 0.2], fewer=[(12, 1.0)]), "b"
    )
    cold = bench.summarize("cold_blur", 3.0, "claim", {}, evals([0.3]), "c")
    assert blur["curve"] == [(12, 1.0), (50, 0.2)] and blur["bpd"] is None
    assert cold["fid_digits_2k_spread"] is None  # one seed: no spread
    rows = {r[0]: r for r in table_rows(bench.table([gauss, blur, cold], "cmd"))}
    assert rows["blur"][2] == "1.67" and rows["blur"][3].endswith("✗")  # 0.2/0.12 > 1.5
    assert rows["cold_blur"][2] == "2.5" and rows["cold_blur"][3].endswith("✓")
    assert rows["real test split (floor)"][1] == "0.8"


def table_rows(markdown):
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines]


@pytest.mark.parametrize("preset", ["cpu", "gpu"])
def test_every_family_composes_under_each_preset(bench, preset, tmp_path):
    """The presets' overrides (GPU: MNIST at 32×32, a wider U-Net, Inception) name keys and options
    that exist, for every family; building is left out (the GPU preset reads ../shared/data)."""
    from tests.conftest import compose_config

    spec = bench.PRESETS[preset]
    for name, (overrides, _, _) in bench.FAMILIES.items():
        cfg = compose_config(
            "train",
            [*spec["train"], *overrides, *spec.get("family", {}).get(name, [])],
            tmp_path / name,
        )
        if preset == "gpu":
            assert cfg.dataset.image_size == 32 and cfg.evaluation.extractor == "inception"
