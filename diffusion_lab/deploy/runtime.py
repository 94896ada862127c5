"""An exported denoiser run by ONNX Runtime, behind the project's denoiser signature.

    OnnxDenoiser(path)(x, state, cond=None) -> x0_hat

so the project's own samplers drive it unchanged (they call `denoiser(x, process.state(t), cond)`,
DESIGN §3): `sampling.generate(OnnxDenoiser(path), module.process, sampler, n, seed=...)`.
The graph (diffusion_lab/deploy/onnx_export.py) computes the state from t itself, so only state.t
is fed; α, σ and noise_cond come out of the same schedule inside the graph. It is an nn.Module
without parameters, so sampling.generate's CountCalls can hold it and runs it on the CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from diffusion_lab.deploy.onnx_export import OUTPUT_NAME


class OnnxDenoiser(nn.Module):
    """D(x; state, cond) ≈ E[x0 | x_t] from an ONNX Runtime session on `path`.

    `providers` ONNX Runtime execution providers (default: the CPU); `threads` intra-op threads
    (default: torch's thread count, so both runtimes compete for the same cores alike)."""

    def __init__(self, path: str | Path, providers: list[str] | None = None, threads=None):
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.log_severity_level = 3  # errors only: shape-inference notes are not for users
        self.path = str(path)
        self.session = ort.InferenceSession(
            self.path, options, providers=providers or ["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.takes_cond = "cond" in self.input_names

    def forward(self, x: Tensor, state, cond: Tensor | None = None) -> Tensor:
        if cond is not None and not self.takes_cond:
            raise ValueError(f"{self.path} is unconditional: it takes no class labels")
        if cond is None and self.takes_cond:
            raise ValueError(f"{self.path} is class-conditional: pass cond (B,) labels")
        t = state.t.detach().reshape(-1).float().cpu()
        feeds = {
            "x": x.detach().float().cpu().contiguous().numpy(),
            "t": t.expand(len(x)).contiguous().numpy(),
        }
        if self.takes_cond:
            feeds["cond"] = cond.detach().long().cpu().numpy()
        (x0_hat,) = self.session.run([OUTPUT_NAME], feeds)
        return torch.from_numpy(np.asarray(x0_hat)).to(device=x.device, dtype=x.dtype)

    def extra_repr(self) -> str:
        return f"path={self.path}, providers={self.session.get_providers()}"
