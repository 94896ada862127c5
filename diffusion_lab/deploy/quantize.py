"""INT8 quantisation of an exported denoiser through onnxruntime.quantization.

    quantize(model, out, "dynamic")             int8 weights; activations quantised per call from
                                                their own range (no calibration data)
    quantize(model, out, "static", reader)      int8 weights and activations (QDQ), activation
                                                ranges calibrated (min/max) on `reader`'s batches
    CalibrationData(images, process, ...)        real x_t ~ q(x_t | x0) (the run's own process,
                                                process.sample) at t ~ U(0, 1), x0 training images

Only the backbone's Conv, MatMul and Gemm nodes with weights are quantised. The schedule, the
preconditioning (c_skip, c_out up to 1/α) and the basis U (a MatMul for DCT/PCA) stay float32, as
the diffusion arithmetic does under autocast in training (DESIGN §3). Measured: docs/deploy.md.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

MODES = ("dynamic", "static")
QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")


def backbone_nodes(model_path: str | Path) -> list[str]:
    """Names of the Conv/MatMul/Gemm nodes of the ONNX model at `model_path` whose weight is a
    backbone parameter: an initializer named `denoiser.backbone.*` (both exporters keep the
    module paths in initializer names), directly or through a Transpose/Reshape. Attention's
    activation × activation MatMuls (q kᵀ, softmax · v) have no weight and stay float32."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    weights = {i.name for i in graph.initializer}
    made_by = {out: node for node in graph.node for out in node.output}

    def weight_of(name: str) -> str | None:
        node = made_by.get(name)
        if name not in weights and node is not None and node.op_type in ("Transpose", "Reshape"):
            name = node.input[0]
        return name if name in weights else None

    return [
        node.name
        for node in graph.node
        if node.op_type in QUANTIZED_OPS
        and len(node.input) > 1
        and (weight_of(node.input[1]) or "").startswith("denoiser.backbone.")
    ]


def int8_tensors(model_path: str | Path) -> int:
    """The number of INT8 initializers (weights and their zero points) in `model_path`."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return sum(i.data_type == onnx.TensorProto.INT8 for i in graph.initializer)


class CalibrationData:
    """Batches {x: x_t, t: t[, cond: labels]} with x_t = process.sample(x0, t) for training
    images x0 (cycled, in order) and t ~ U(0, 1), seeded: what the denoiser sees at sampling
    time, built with the run's own corruption. An onnxruntime CalibrationDataReader."""

    def __init__(
        self,
        images: Tensor,
        process,
        num_batches: int,
        batch_size: int,
        labels: Tensor | None = None,
        seed: int = 0,
    ):
        self.batches = []
        gen = torch.Generator().manual_seed(seed)
        for b in range(num_batches):
            index = torch.arange(b * batch_size, (b + 1) * batch_size) % len(images)
            x0 = images[index].float()
            t = torch.rand(batch_size, generator=gen)
            noise = torch.randn(x0.shape, generator=gen)
            with torch.no_grad():
                x_t = process.sample(x0, t, noise)[0]
            feeds = {"x": x_t.numpy().astype(np.float32), "t": t.numpy()}
            if labels is not None:
                feeds["cond"] = labels[index].long().numpy()
            self.batches.append(feeds)
        self._next = 0

    def get_next(self) -> dict | None:
        if self._next >= len(self.batches):
            return None
        self._next += 1
        return self.batches[self._next - 1]

    def rewind(self) -> None:
        self._next = 0

    def __len__(self) -> int:
        return len(self.batches)


def calibration_data(datamodule, process, num_batches: int, batch_size: int, seed=0, labels=False):
    """CalibrationData over `datamodule`'s training split (its first images, in order)."""
    datamodule.setup("fit")
    data = datamodule.train_set
    n = min(len(data), num_batches * batch_size)
    pairs = [data[i] for i in range(n)]
    images = torch.stack([p[0] for p in pairs])
    y = torch.as_tensor([int(p[1]) for p in pairs]) if labels else None
    return CalibrationData(images, process, num_batches, batch_size, labels=y, seed=seed)


def quantize(model_path: str | Path, out_path: str | Path, mode: str, reader=None) -> dict:
    """Write the INT8 model of `model_path` to `out_path`; returns the settings used."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if mode not in MODES:
        raise ValueError(f"quantize={mode} is not valid: it must be one of {', '.join(MODES)}")
    nodes = backbone_nodes(model_path)
    settings = {
        "mode": mode,
        "quantized_ops": list(QUANTIZED_OPS),
        "selected_nodes": len(nodes),
        "weight_type": "int8",
    }
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # ONNX shape inference only: ORT's graph optimisation would rename the nodes selected
        # above, and its symbolic shape inference does not follow the dynamic batch through
        quant_pre_process(
            str(model_path), str(prepared), skip_optimization=True, skip_symbolic_shape=True
        )
        if mode == "dynamic":
            quantize_dynamic(
                prepared,
                out_path,
                weight_type=QuantType.QInt8,
                nodes_to_quantize=nodes,
                per_channel=False,
            )
            return settings | {
                "activations": "uint8, range of each call (dynamic)",
                "int8_tensors": int8_tensors(out_path),
                "note": "ORT's dynamic quantiser has no integer Gemm: Linear layers stay float32",
            }
        if reader is None:
            raise ValueError("static quantisation needs calibration data (a reader of x_t)")

        class Reader(CalibrationDataReader):
            def get_next(self):
                return reader.get_next()

            def rewind(self):
                reader.rewind()

        reader.rewind()
        quantize_static(
            prepared,
            out_path,
            Reader(),
            quant_format=QuantFormat.QDQ,
            nodes_to_quantize=nodes,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    return settings | {
        "int8_tensors": int8_tensors(out_path),
        "activations": "int8, per-tensor min/max over the calibration batches (QDQ)",
        "weights": "int8 per output channel",
        "calibration_batches": len(reader),
    }
