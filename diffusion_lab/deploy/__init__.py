"""Deployment: the EMA denoiser as an ONNX graph, run by ONNX Runtime, optionally INT8.

    onnx_export.py  DenoiserAtTime (x, t[, cond]) → x̂0; export_onnx; parity vs PyTorch
    runtime.py      OnnxDenoiser: an ONNX Runtime session behind the denoiser signature, so the
                    project's samplers (sampling.generate) drive it unchanged
    quantize.py     INT8 dynamic / static (calibrated on real x_t) via onnxruntime.quantization

`python export.py ckpt_path=... format=onnx [quantize=dynamic|static]` (diffusion_lab/cli/export.py);
measurements in docs/deploy.md. onnx, onnxscript and onnxruntime come with the `deploy` extra.
"""
