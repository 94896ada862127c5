"""ONNX export, the ONNX Runtime denoiser and INT8 quantisation (diffusion_lab/deploy/).

Untrained models (no checkpoint needed): the zero-initialised output layers (U-Net's last conv,
DiT's adaLN-Zero) are filled with random weights first, else the backbone would output 0 and
x̂0 = c_skip x would check only the preconditioning.

Parity tolerance: PARITY_FACTOR (4) × e32, e32 = max |PyTorch float32 − the same graph in
float64| measured here, on this CPU (diffusion_lab/deploy/onnx_export.py `parity`).
"""

from functools import partial

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from diffusion_lab.build import build, build_module  # noqa: E402
from diffusion_lab.deploy.onnx_export import (  # noqa: E402
    PARITY_FACTOR,
    DenoiserAtTime,
    example_inputs,
    export_onnx,
    float64_reference,
    parity,
    translations,
)
from diffusion_lab.deploy.quantize import (  # noqa: E402
    CalibrationData,
    backbone_nodes,
    quantize,
)
from diffusion_lab.deploy.runtime import OnnxDenoiser  # noqa: E402
from diffusion_lab.sampling import generate  # noqa: E402
from tests.conftest import compose_config  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_UNET = [
    "backbone.model_channels=8",
    "backbone.channel_mult=[1,2]",
    "backbone.num_res_blocks=1",
]
CASES = {
    "unet": ["backbone=unet", *TINY_UNET, "backbone.attn_resolutions=[8]", "sampler=ddim"],
    "dit": ["backbone=dit", "backbone.hidden_size=32", "backbone.depth=1", "backbone.num_heads=2"],
    "mlp": ["dataset=toy2d", "backbone=mlp", "backbone.hidden=32", "backbone.depth=1"],
    "gud": ["degradation=gud", *TINY_UNET, "backbone.attn_resolutions=[]"],
    "blur": ["degradation=blur", *TINY_UNET, "backbone.attn_resolutions=[]"],
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("deploy")


def tiny_module(cache, overrides, seed=0):
    cfg = compose_config("train", ["debug=fast", *overrides], cache)
    module = build_module(cfg, build(cfg)).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.ema.parameters():
            if not p.any():  # zero-initialised output layers
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    return module


@pytest.fixture(scope="module")
def export_of(cache):
    """case -> (module, DenoiserAtTime, path of its model.onnx), each exported once."""
    done = {}

    def get(case):
        if case not in done:
            module = tiny_module(cache, CASES[case])
            model, facts = exported(module, cache / f"{case}.onnx")
            done[case] = module, model, cache / f"{case}.onnx", facts
        return done[case]

    return get


def exported(module, path, num_classes=None):
    model = DenoiserAtTime(module.ema, module.process).eval()
    facts = export_onnx(model, example_inputs(module.process.data_shape, 2, num_classes), path)
    return model, facts


def onnx_call(onnx, process):
    return lambda x, t, c=None: onnx(x, process.state(t), c)


@pytest.mark.parametrize("case", list(CASES))
def test_onnxruntime_matches_pytorch_within_float32_rounding(export_of, case):
    """Every backbone and a per-component process (GUD, blur): the dynamo exporter's graph,
    run by ONNX Runtime at another batch size than traced (dynamic axis), agrees with PyTorch
    to 4 × the float32 rounding error of the graph itself."""
    module, model, path, facts = export_of(case)
    assert facts["exporter"] == "dynamo" and facts["dynamo_failed"] is None
    assert facts["opset"] == 18 and facts["inputs"]["x"]["shape"][0] == "batch"
    onnx = OnnxDenoiser(path, threads=1)
    check = parity(
        model,
        onnx_call(onnx, module.process),
        example_inputs(module.process.data_shape, 12, seed=1),
    )
    assert check["max_abs_diff"] <= check["tolerance"], check
    assert check["tolerance"] == PARITY_FACTOR * check["float32_rounding"]
    # the scale is float32 rounding, not a loose constant: ~1e-7 relative to the output
    assert check["float32_rounding"] < 1e-4 * max(1.0, check["max_abs_output"])


def test_log_sigmoid_keeps_relative_precision(tmp_path):
    """ONNX has no LogSigmoid; the exporter's Log(Sigmoid(x)) loses σ(x)'s relative precision
    for x ≪ 0 (GUD's α = exp(½ log σ(λ)), which divides x̂0). The translation keeps exp(log σ(x))
    within a few float32 ulp of σ(x) down to x = −80."""

    class LogSigmoid(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.logsigmoid(x)

    x = torch.linspace(-80, 30, 512)
    program = torch.onnx.export(
        LogSigmoid().eval(), (x,), dynamo=True, custom_translation_table=translations()
    )
    program.save(str(tmp_path / "ls.onnx"))
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "ls.onnx"), providers=["CPUExecutionProvider"])
    y = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    exact = torch.nn.functional.logsigmoid(x.double())
    relative = ((y.double().exp() - exact.exp()) / exact.exp()).abs().max()
    assert relative < 8 * 2.0**-24 * 81  # |Δ log σ| ≲ a few ulp of |x| ≤ 80, × 8 margin


def test_float64_reference_widens_the_denoisers_float32_casts(cache):
    module = tiny_module(cache, CASES["gud"])
    model = DenoiserAtTime(module.ema, module.process).eval()
    inputs = example_inputs(module.process.data_shape, 4, seed=3)
    y64 = float64_reference(model, inputs)
    with torch.no_grad():
        y32 = model(*inputs)
    assert y64.dtype == torch.float64 and y64.shape == y32.shape
    error = (y32.double() - y64).abs().max()
    assert 0 < error < 1e-4 * y64.abs().max()  # float32 rounding: present, and small


def test_the_onnx_sampler_reproduces_pytorch_samples(export_of):
    """sampling.generate with OnnxDenoiser (inside its CountCalls) vs the EMA denoiser, DDIM,
    4 steps. Tolerance: the spread of the PyTorch sampler when every call's x̂0 is perturbed by
    the parity tolerance δ (random signs, 2 draws), × 2 since random signs are not the worst
    case: ONNX Runtime's per-call error is bounded by δ (test above), so its samples must lie
    within what errors of that size do after 4 steps."""
    module, model, path, _ = export_of("unet")
    onnx = OnnxDenoiser(path, threads=1)
    shape = module.process.data_shape
    delta = parity(model, onnx_call(onnx, module.process), example_inputs(shape, 8, seed=4))
    delta = delta["tolerance"]
    sampler = partial(module.sampler, num_steps=4)
    x_torch, nfe_torch = generate(module.ema, module.process, sampler, 8, seed=5)
    x_onnx, nfe_onnx = generate(onnx, module.process, sampler, 8, seed=5)
    assert nfe_onnx == nfe_torch == 4

    class Perturbed(torch.nn.Module):
        def __init__(self, seed):
            super().__init__()
            self.gen = torch.Generator().manual_seed(seed)

        def forward(self, x, state, cond=None):
            y = module.ema(x, state, cond)
            return y + delta * (2 * torch.rand(y.shape, generator=self.gen) - 1)

    spread = max(
        float((generate(Perturbed(s), module.process, sampler, 8, seed=5)[0] - x_torch).abs().max())
        for s in (0, 1)
    )
    diff = float((x_onnx - x_torch).abs().max())
    assert 0 < spread and diff <= 2 * spread, (diff, spread)


def test_calibration_batches_are_the_processs_own_x_t(cache):
    module = tiny_module(cache, CASES["blur"])
    images = torch.rand(10, *module.process.data_shape) * 2 - 1
    reader = CalibrationData(images, module.process, num_batches=3, batch_size=4, seed=7)
    batches = []
    while (feeds := reader.get_next()) is not None:
        batches.append(feeds)
    assert len(batches) == 3 == len(reader)
    reader.rewind()
    assert reader.get_next() is batches[0]
    gen = torch.Generator().manual_seed(7)
    t = torch.rand(4, generator=gen)
    noise = torch.randn((4, *module.process.data_shape), generator=gen)
    x_t = module.process.sample(images[:4], t, noise)[0]
    assert torch.equal(torch.from_numpy(batches[0]["t"]), t)
    assert torch.allclose(torch.from_numpy(batches[0]["x"]), x_t)
    assert 0 <= batches[2]["t"].min() and batches[2]["t"].max() <= 1


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_int8_models_run_smaller_and_keep_the_float_arithmetic(export_of, tmp_path, mode):
    """Only the backbone's Conv/MatMul/Gemm are quantised: blur's DCT basis (MatMul outside the
    backbone) and the preconditioning stay float32."""
    module, model, path, _ = export_of("blur")
    import onnx

    graph = onnx.load(str(path)).graph
    basis = [  # U x and Uᵀ c of the DCT: MatMuls with the basis matrix as an operand
        n.name
        for n in graph.node
        if n.op_type == "MatMul" and any(i.startswith("denoiser.basis.") for i in n.input)
    ]
    selected = backbone_nodes(path)
    assert len(basis) >= 4 and selected and not set(selected) & set(basis)
    images = torch.rand(16, *module.process.data_shape) * 2 - 1
    reader = CalibrationData(images, module.process, num_batches=2, batch_size=8)
    settings = quantize(path, tmp_path / "q.onnx", mode, reader)
    assert settings["selected_nodes"] == len(selected)
    assert (tmp_path / "q.onnx").stat().st_size < path.stat().st_size
    # every selected Conv's weight is stored as INT8 in both modes (the dynamic quantiser has no
    # integer Gemm, so it leaves the Linear layers float32)
    convs = [n for n in graph.node if n.name in set(selected) and n.op_type == "Conv"]
    int8 = [i for i in onnx.load(str(tmp_path / "q.onnx")).graph.initializer if i.data_type == 3]
    assert convs and settings["int8_tensors"] == len(int8) >= len(convs)
    conv_weights = {i.name: int(np.prod(i.dims)) for i in graph.initializer}
    assert sum(np.prod(i.dims) for i in int8) >= sum(conv_weights[n.input[1]] for n in convs)
    ops = {n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node}
    assert ops & ({"ConvInteger", "MatMulInteger"} if mode == "dynamic" else {"QuantizeLinear"})
    inputs = example_inputs(module.process.data_shape, 4, seed=8)
    y8 = onnx_call(OnnxDenoiser(tmp_path / "q.onnx", threads=1), module.process)(*inputs)
    with torch.no_grad():
        y32 = model(*inputs)
    assert torch.isfinite(y8).all()
    # INT8 is an approximation, not a copy: close in RMS, not equal
    assert 0 < (y8 - y32).pow(2).mean().sqrt() < 0.1 * y32.pow(2).mean().sqrt()


def test_static_quantisation_needs_calibration_data(tmp_path):
    with pytest.raises(ValueError, match="quantize=int4"):
        quantize(tmp_path / "m.onnx", tmp_path / "q.onnx", "int4")
