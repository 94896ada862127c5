"""Progressive distillation (Salimans & Ho 2022, Alg. 2): a student learns in ONE DDIM step what
the teacher does in TWO, and each round halves the sampling steps (2N → N → N/2 ...).

Grid: DDIM with η = 0 on the uniform grid t_i = i/N (samplers/grids.uniform, the T-step DDPM
grid), so the student's N-step grid is every other point of the teacher's 2N-step grid. For a
student time t = i/N, t' = t − 1/(2N), t'' = t − 1/N, two teacher DDIM steps z_t → z_t' → z_t''
give the x0 target that makes one student DDIM step t → t'' land on z_t'' (Alg. 2):

    x̃ = (z_t'' − (σ_t''/σ_t) z_t) / (α_t'' − (σ_t''/σ_t) α_t).

Loss: our Denoiser predicts x̂0 through its preconditioning (denoiser.py / precond.py), so the loss
is written on x̂0: w(t) ‖x̂0 − x̃‖² (mean over pixels) with the paper's "truncated SNR" weight
w = max(α²/σ², 1) (§4), the default; `weighting: v_mse` uses w = (α² + σ²)²/σ², for which the
loss is exactly ‖v̂ − v‖² (v = α ε − σ x0; the two weights agree within a factor 2 for VP).

Shapes: x0, z (B, *data_shape); t (B,) per-sample times; α, σ (B, 1, ..., 1) (isotropic only).
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffusion_lab.process import State

WEIGHTINGS = ("truncated_snr", "v_mse")


def ddim_step(denoiser, process, x: Tensor, t: Tensor, s: Tensor, cond=None):
    """One deterministic DDIM step (Song et al. 2021, eq. 12, η = 0) from per-sample times t to
    s (B,): x_s = α_s x̂0 + σ_s (x_t − α_t x̂0)/σ_t. Isotropic processes: α, σ are scalars per
    sample, so the update is the same in every orthonormal basis. Returns (x_s, x̂0)."""
    st, ss = process.state(t), process.state(s)
    x0 = denoiser(x, st, cond)
    eps = (x - st.alpha * x0) / st.sigma
    return ss.alpha * x0 + ss.sigma * eps, x0


def target(teacher, process, z_t: Tensor, t: Tensor, t_mid: Tensor, t_next: Tensor, cond=None):
    """x̃ of Alg. 2: the x0 that takes one DDIM step z_t → z_t'' where two teacher steps go."""
    z_mid, _ = ddim_step(teacher, process, z_t, t, t_mid, cond)
    z_next, _ = ddim_step(teacher, process, z_mid, t_mid, t_next, cond)
    st, sn = process.state(t), process.state(t_next)
    ratio = sn.sigma / st.sigma
    return (z_next - ratio * z_t) / (sn.alpha - ratio * st.alpha)


def weight(state: State, weighting: str = "truncated_snr") -> Tensor:
    """w(t) on ‖x̂0 − x̃‖²: max(SNR, 1) (truncated SNR) or (α² + σ²)²/σ² (= v-MSE), shape (B,)."""
    alpha, sigma = state.alpha.flatten(1)[:, 0], state.sigma.flatten(1)[:, 0]
    if weighting == "truncated_snr":
        return torch.clamp(alpha**2 / sigma**2, min=1.0)
    if weighting == "v_mse":
        return (alpha**2 + sigma**2) ** 2 / sigma**2
    raise ValueError(f"distill.weighting={weighting!r} is not one of {', '.join(WEIGHTINGS)}")


def student_times(num_steps: int, batch: int, generator=None, device=None):
    """(t, t', t'') (each (B,)) for student step indices drawn uniformly from {1, ..., N}."""
    i = torch.randint(1, num_steps + 1, (batch,), generator=generator).to(device)
    t = i.double() / num_steps
    return t, t - 0.5 / num_steps, t - 1.0 / num_steps


class ProgressiveDistillation:
    """The `distill=progressive` method: rounds of halving, from `teacher_steps` DDIM steps.

    Round k (0-based) trains a student with N_k = teacher_steps / 2^(k+1) steps against the
    previous round's EMA weights (round 0: the teacher checkpoint's EMA weights)."""

    name = "progressive"
    sampler_choice = "ddim"  # what round checkpoints sample with (configs/sampler/ddim.yaml)
    has_target_net = False
    needs_edm_teacher = False

    def precond_config(self, sigma_data) -> None:
        """None: the student keeps the teacher's preconditioning."""
        return None

    def __init__(
        self,
        teacher_steps: int = 16,
        rounds: int = 4,
        steps_per_round: int = 500,
        weighting: str = "truncated_snr",
    ):
        if not isinstance(rounds, int) or rounds < 1:
            raise ValueError(f"distill.rounds must be an integer >= 1, got {rounds}")
        if not isinstance(teacher_steps, int) or teacher_steps % 2**rounds or teacher_steps < 2:
            raise ValueError(
                f"distill.teacher_steps={teacher_steps} cannot be halved distill.rounds={rounds} "
                f"times into whole steps: use a multiple of {2**rounds} (e.g. {2**rounds * 2})"
            )
        if weighting not in WEIGHTINGS:
            raise ValueError(
                f"distill.weighting={weighting!r} is not one of {', '.join(WEIGHTINGS)}"
            )
        self.teacher_steps, self.rounds = teacher_steps, rounds
        self.steps_per_round, self.weighting = int(steps_per_round), weighting

    def student_steps(self, round_index: int) -> int:
        return self.teacher_steps // 2 ** (round_index + 1)

    def sampler_config(self, round_index: int) -> dict:
        """What a round's checkpoint samples with by default: DDIM (η = 0), uniform grid, N_k."""
        return {
            "_target_": "diffusion_lab.samplers.ddim.ddim",
            "_partial_": True,
            "num_steps": self.student_steps(round_index),
            "eta": 0.0,
            "grid": {
                "_target_": "diffusion_lab.samplers.grids.uniform",
                "_partial_": True,
                "t_max": 1.0,
                "t_min": None,
            },
        }

    def loss(self, student, teacher, process, x0: Tensor, cond, num_steps: int) -> Tensor:
        """w(t) ‖x̂0_student(z_t) − x̃‖² per sample (B,); t, z from the global (step-seeded) RNG."""
        t, t_mid, t_next = (u.to(x0.device).float() for u in student_times(num_steps, x0.shape[0]))
        z_t, _, state = process.sample(x0, t)
        with torch.no_grad():
            x_tilde = target(teacher, process, z_t, t, t_mid, t_next, cond)
        err = (student(z_t, state, cond) - x_tilde) ** 2
        return weight(state, self.weighting) * err.flatten(1).mean(1)
