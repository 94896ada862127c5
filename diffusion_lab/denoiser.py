"""Denoiser D(x_t; state) ≈ E[x0 | x_t]: a backbone wrapped in preconditioning.

The preconditioning is applied per component in the process's basis U:
    c = U x_t,   D = Uᵀ( c_skip ⊙ c + c_out ⊙ U F(Uᵀ(c_in ⊙ c), c_noise) ).
Diffusion arithmetic runs in float32; only the backbone F runs under the ambient autocast.
`sigma_data` (optional, shaped like one U x) is the data's RMS per component, used by the
preconditioning in place of its scalar σ_d (see diffusion_lab/precond.py).
Shapes: x (B, *data_shape); state fields broadcast against U x; cond (B,) labels or None.
"""

from torch import Tensor, nn

from diffusion_lab.process import State, fp32


class Denoiser(nn.Module):
    def __init__(
        self, backbone: nn.Module, precond, basis: nn.Module, sigma_data: Tensor | None = None
    ):
        super().__init__()
        self.backbone = backbone
        self.precond = precond
        self.basis = basis
        self.register_buffer("sigma_data", sigma_data.float() if sigma_data is not None else None)

    def forward(self, x: Tensor, state: State, cond: Tensor | None = None) -> Tensor:
        with fp32(x):
            c_skip, c_out, c_in = self.precond(state.alpha, state.sigma, self.sigma_data)
            c = self.basis(x.float())
            net_in = self.basis.inverse(c_in * c)
        out = self.backbone(net_in, state.noise_cond, cond)
        with fp32(x):
            return self.basis.inverse(c_skip * c + c_out * self.basis(out.float()))
