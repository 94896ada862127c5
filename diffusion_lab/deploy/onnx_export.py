"""The EMA denoiser as one ONNX graph: (x, t[, cond]) → x̂0, with its parity to PyTorch measured.

    DenoiserAtTime   D(x, t, cond) = Denoiser(x, process.state(t), cond): the schedule, the
                     preconditioning and the basis are all inside (diffusion_lab/denoiser.py)
    export_onnx      torch.onnx.export, dynamo exporter first (TorchScript exporter only when
                     dynamo fails, with the reason recorded), dynamic batch axis
    parity           ONNX Runtime vs PyTorch on a fresh batch, with a tolerance derived from the
                     float32 rounding of the same graph (measured against its float64 evaluation)

Inputs: x (B, *data_shape) float32, t (B,) float32 in [0, 1], cond (B,) int64 class labels (only
for class-conditional checkpoints). Output: x0_hat (B, *data_shape) float32.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

# The dynamo exporter writes its operators against opset 18 (torchlib's own version): it needs no
# version conversion there, and ONNX Runtime ≥ 1.14 runs it.
OPSET = 18
INPUT_NAMES = ("x", "t", "cond")
OUTPUT_NAME = "x0_hat"
UNIT_ROUNDOFF = 2.0**-24  # float32: u = 2^-24, half the spacing of floats in [1, 2)
# |y_ort − y_torch| ≤ e_ort + e_torch: each is the float32 rounding error of the same graph,
# evaluated in another order (other GEMM/conv blocking, MLAS's own exp/tan kernels). e_torch is
# measured against float64 on the CPU running the check; the tolerance allows e_ort ≤ 3 e_torch,
# so 4 e_torch in all (measured e_ort/e_torch ≤ 1.4 over 14 process/backbone configs, docs/deploy.md).
PARITY_FACTOR = 4.0


class DenoiserAtTime(nn.Module):
    """x̂0 = D(x; state(t), cond): a Denoiser with its process's state(t) in front, so a graph
    needs only t. Mirrors what every sampler calls: `denoiser(x, process.state(t), cond)`."""

    def __init__(self, denoiser: nn.Module, process: nn.Module):
        super().__init__()
        self.denoiser, self.process = denoiser, process

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.denoiser(x, self.process.state(t), cond)


def _log_sigmoid(x):
    """log σ(x) = min(x, 0) − log(1 + e^{−|x|}) in ONNX. The exporter's own Log(Sigmoid(x)) loses
    the relative precision of σ(x) for x ≪ 0 (ORT's Sigmoid is accurate to ~1e-7 absolutely), and
    GUD's α = exp(½ log σ(λ)) divides x̂0: measured 3.5e-4 relative error in α at λ = −10."""
    from onnxscript import opset18 as op

    zero = op.CastLike(op.Constant(value_float=0.0), x)
    one = op.CastLike(op.Constant(value_float=1.0), x)
    return op.Sub(op.Min(x, zero), op.Log(op.Add(one, op.Exp(op.Neg(op.Abs(x))))))


def _searchsorted(sorted_sequence, values, out_int32=False, right=False, side=None, sorter=None):
    """torch.searchsorted for a 1-D sorted table (tabulated schedules: blur_w2, ddpm_discrete),
    which ONNX lacks: the number of table entries < v (≤ v with right=True) for each v."""
    from onnxscript import opset18 as op

    if sorter is not None or len(sorted_sequence.shape or ()) != 1:
        raise NotImplementedError("searchsorted: only a 1-D table without sorter is exported")
    after = op.Unsqueeze(values, op.Constant(value_ints=[-1]))
    below = op.LessOrEqual(sorted_sequence, after) if right or side == "right" else None
    below = below if below is not None else op.Less(sorted_sequence, after)
    count = op.ReduceSum(op.Cast(below, to=7), op.Constant(value_ints=[-1]), keepdims=0)  # 7: INT64
    return op.Cast(count, to=6) if out_int32 else count  # 6: INT32


def translations() -> dict:
    return {
        torch.ops.aten.log_sigmoid.default: _log_sigmoid,
        torch.ops.aten.searchsorted.Tensor: _searchsorted,
    }


def example_inputs(
    data_shape, batch: int, num_classes: int | None = None, seed: int = 0
) -> tuple[Tensor, ...]:
    """(x ~ N(0, I), t ~ U(0, 1)[, labels]) for tracing and parity checks, seeded."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, *data_shape), generator=gen)
    t = torch.rand(batch, generator=gen)
    if num_classes is None:
        return x, t
    return x, t, torch.randint(0, num_classes, (batch,), generator=gen)


def export_onnx(
    model: DenoiserAtTime, inputs: tuple[Tensor, ...], path: str | Path, opset: int = OPSET
) -> dict:
    """Write `model` to `path` as ONNX with a dynamic batch axis; returns what was done:
    exporter ('dynamo' or 'torchscript'), why dynamo failed if it did, opset, names and shapes."""
    path = Path(path)
    names = list(INPUT_NAMES[: len(inputs)])
    model = model.eval()
    fallback_reason = None
    batch = torch.export.Dim("batch", min=1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                inputs,
                dynamo=True,
                opset_version=opset,
                input_names=names,
                output_names=[OUTPUT_NAME],
                dynamic_shapes=tuple({0: batch} for _ in inputs),
                custom_translation_table=translations(),
                verbose=False,
            )
        program.save(str(path))
        exporter = "dynamo"
        _drop_node_metadata(path)
    except Exception as err:  # the exporter's failures have no common type
        fallback_reason = f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                inputs,
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=names,
                output_names=[OUTPUT_NAME],
                dynamic_axes={name: {0: "batch"} for name in [*names, OUTPUT_NAME]},
            )
        exporter = "torchscript"
    return {
        "exporter": exporter,
        "dynamo_failed": fallback_reason,
        "opset": opset,
        "inputs": {
            name: {"shape": ["batch", *x.shape[1:]], "dtype": str(x.dtype).removeprefix("torch.")}
            for name, x in zip(names, inputs)
        },
        "outputs": {OUTPUT_NAME: {"shape": ["batch", *inputs[0].shape[1:]], "dtype": "float32"}},
    }


def _drop_node_metadata(path: Path) -> None:
    """Remove the dynamo exporter's per-node debug strings (module path, FX node, stack): about
    15 % of a 5 MB model's file and most of a tiny one's; nothing reads them at run time."""
    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node:
        del node.metadata_props[:]
    onnx.save(model, str(path))


def float64_reference(model: nn.Module, inputs: tuple[Tensor, ...]) -> Tensor:
    """The same graph evaluated in float64: `model` captured by torch.export (what the dynamo
    exporter converts), every float32 cast and dtype argument in it made float64, its weights
    cast to float64. The model's own `.float()` calls (the Denoiser keeps its diffusion
    arithmetic in float32) would otherwise pin a plain `model.double()` to float32."""
    program = torch.export.export(copy.deepcopy(model).eval(), inputs)
    graph_module = program.module()

    def widen(value):
        return torch.float64 if value is torch.float32 else value

    for sub in graph_module.modules():
        if not isinstance(sub, torch.fx.GraphModule):
            continue
        for node in list(sub.graph.nodes):
            if node.op != "call_function":
                continue
            if node.target is torch.ops.aten._assert_tensor_metadata.default:
                sub.graph.erase_node(node)  # asserts float32 inputs
                continue
            node.args = tuple(widen(v) for v in node.args)
            node.kwargs = {k: widen(v) for k, v in node.kwargs.items()}
        sub.recompile()
    graph_module.double()
    with torch.no_grad():
        return graph_module(*(x.double() if x.is_floating_point() else x for x in inputs))


def parity(
    model: nn.Module, run_onnx, inputs: tuple[Tensor, ...], factor: float = PARITY_FACTOR
) -> dict:
    """max |ONNX − PyTorch| on `inputs` against the tolerance factor × e32, where e32 is the
    float32 rounding error of the PyTorch graph on this CPU, max |y_float32 − y_float64| (at
    least one unit roundoff of the largest output, u · max |y|). `run_onnx(*inputs)` → Tensor."""
    with torch.no_grad():
        y32 = model.eval()(*inputs).double()
    y64 = float64_reference(model, inputs)
    y_onnx = run_onnx(*inputs).double()
    rounding = max(float((y32 - y64).abs().max()), UNIT_ROUNDOFF * float(y64.abs().max()))
    diff = float((y_onnx - y32).abs().max())
    return {
        "max_abs_diff": diff,
        "tolerance": factor * rounding,
        "float32_rounding": rounding,
        "onnx_vs_float64": float((y_onnx - y64).abs().max()),
        "max_abs_output": float(y64.abs().max()),
        "batch": len(inputs[0]),
        "within_tolerance": diff <= factor * rounding,
    }
