"""Cold Diffusion restoration loss (Bansal et al. 2022, eq. 2):

    L = E_{t, x0} ‖R(D(x0, t), t) − x0‖,   L1 (the paper's choice) or squared L2,

with R the denoiser (a restoration network, precond=x0) and D the Cold operator (plus its small
noise, if any). Cold processes use the identity basis, so the error is measured on pixels.
Shapes: x0 (B, C, H, W); returns (B,), averaged over components.
"""

from diffusion_lab.objectives.base import Objective

NORMS = ("l1", "l2")


class Cold(Objective):
    def __init__(self, time, norm: str = "l1"):
        super().__init__(time)
        if norm not in NORMS:
            raise ValueError(f"objective.norm must be one of {list(NORMS)}, got {norm!r}")
        self.norm = norm

    def error(self, state, c_t, c0, c0_hat, z):
        diff = c0_hat - c0
        return diff.abs() if self.norm == "l1" else diff**2
