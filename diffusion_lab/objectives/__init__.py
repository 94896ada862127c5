"""Training objectives: `objective(denoiser, process, x0, cond) -> (B,)` per-sample losses.

Each objective owns its time density (objectives/time.py) and weighting (objectives/weighting.py).
"""

from diffusion_lab.objectives.base import Objective
from diffusion_lab.objectives.denoising import Denoising
from diffusion_lab.objectives.eps import Eps
from diffusion_lab.objectives.soft_score import SoftScore
from diffusion_lab.objectives.v import V

__all__ = ["Objective", "Denoising", "Eps", "V", "SoftScore"]
