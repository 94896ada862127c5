"""`python export.py` as a user runs it: a trained checkpoint → model.onnx (+ model.int8.onnx)
and export.json; refusals and bad values in one line (exit 2)."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from diffusion_lab.build import module_from_checkpoint  # noqa: E402
from diffusion_lab.cli.export import check_exportable  # noqa: E402
from diffusion_lab.cli.train import train  # noqa: E402
from diffusion_lab.deploy.runtime import OnnxDenoiser  # noqa: E402
from diffusion_lab.sampling import generate  # noqa: E402
from diffusion_lab.values import ConfigError  # noqa: E402
from tests.conftest import compose_config, run_main  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = [
    "debug=fast",
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "backbone.model_channels=8",
    "backbone.channel_mult=[1,2]",
    "backbone.num_res_blocks=1",
    "backbone.attn_resolutions=[]",
]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A tiny class-conditional U-Net, trained two steps: labels are an input of its graph."""
    out = tmp_path_factory.mktemp("export")
    args = [*FAST, "conditional=true", "backbone.num_classes=10"]
    return Path(train(compose_config("train", args, out))["checkpoint"])


def _export(root: Path, *args) -> tuple[int, str, str]:
    return run_main("export.py", *args, f"hydra.run.dir={root}/run", root=root)


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_export_writes_the_graph_its_int8_version_and_the_facts(ckpt, tmp_path, mode):
    """Static: into `output=`; dynamic: into the run directory (the default)."""
    args = [f"ckpt_path={ckpt}", f"quantize={mode}", "calibration_batches=2", "parity_batch=6"]
    run = tmp_path / ("run" if mode == "dynamic" else "deploy")
    status, out, err = _export(tmp_path, *args, *([f"output={run}"] if mode == "static" else []))
    assert status == 0, err[-3000:]
    assert (tmp_path / "run").is_dir() and (run / "model.onnx").is_file()
    facts = json.loads((run / "export.json").read_text())
    assert facts["exporter"] == "dynamo" and facts["opset"] == 18
    assert set(facts["inputs"]) == {"x", "t", "cond"} and facts["class_conditional"]
    assert facts["inputs"]["x"]["shape"] == ["batch", 1, 16, 16]
    parity = facts["parity"]
    assert parity["max_abs_diff"] <= parity["tolerance"] == 4 * parity["float32_rounding"]
    q = facts["quantized"]
    assert q["mode"] == mode and q["int8_tensors"] > 0
    assert (run / "model.int8.onnx").stat().st_size == q["size_bytes"] < facts["size_bytes"]
    assert "parity vs PyTorch" in out and "model.int8.onnx" in out
    assert facts["versions"]["onnxruntime"] and facts["versions"]["torch"]
    if mode == "static":
        assert q["calibration_batches"] == 2

    # the project's sampler drives the exported graph (guidance doubles the batch: null labels)
    module, _, _ = module_from_checkpoint(ckpt)
    labels = torch.arange(4) % 10
    for path in ("model.onnx", "model.int8.onnx"):
        onnx = OnnxDenoiser(run / path, threads=1)
        x, nfe = generate(
            onnx,
            module.process,
            module.sampler,
            4,
            seed=1,
            cond=labels,
            guidance=2.0,
            null_label=module.num_classes,
        )
        assert x.shape == (4, 1, 16, 16) and torch.isfinite(x).all() and nfe == 3
        labelled = onnx(x, module.process.state(torch.full((4,), 0.5)), labels)
        other = onnx(x, module.process.state(torch.full((4,), 0.5)), (labels + 1) % 10)
        assert (labelled - other).abs().max() > 0  # the labels reach the network
        with pytest.raises(ValueError, match="class-conditional"):
            onnx(x, module.process.state(torch.full((4,), 0.5)))


@pytest.mark.parametrize(
    "args, words",
    [
        (["ckpt_path=/nonexistent/last.ckpt"], "/nonexistent/last.ckpt"),
        (["format=tflite"], "format=tflite is not valid"),
        (["quantize=int4"], "quantize=int4 is not valid"),
        (["opset=11"], "opset=11 is not valid"),
        (["calibration_batches=0"], "calibration_batches=0 is not valid"),
        ([], "ckpt_path is required"),
    ],
)
def test_bad_inputs_get_one_line(ckpt, tmp_path, args, words):
    given = [a for a in args if a.startswith("ckpt_path=")] or (
        [f"ckpt_path={ckpt}"] if args else []
    )
    status, _, err = _export(tmp_path, *given, *[a for a in args if a not in given])
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error:"), err
    assert words in lines[0]
    assert not (tmp_path / "run" / "model.onnx").exists()


def test_latent_and_super_resolution_models_are_refused():
    plain = SimpleNamespace(lowres=None, codec=None)
    check_exportable(plain, "a.ckpt")
    with pytest.raises(ConfigError, match="latent model.*decoder is not in it"):
        check_exportable(SimpleNamespace(lowres=None, codec=object()), "a.ckpt")
    with pytest.raises(ConfigError, match="super-resolution stage.*image condition"):
        check_exportable(SimpleNamespace(lowres=object(), codec=None), "a.ckpt")
