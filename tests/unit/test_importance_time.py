"""Importance-sampled t (Nichol & Dhariwal 2021, §3.3): warm-up, convergence of p to ∝ sqrt(E L²),
unbiasedness of the q/p-weighted loss, the ring buffers, state_dict round trip, and the objective's
use of the weights and the history, down to a real `python train.py objective/time=importance`."""

import copy
import math

import numpy as np
import pytest
import torch
from numpy.polynomial import Polynomial

from diffusion_lab.degradations import VariancePreserving
from diffusion_lab.objectives import Denoising, Eps, SoftScore
from diffusion_lab.objectives.cold import Cold
from diffusion_lab.objectives.time import ImportanceTime, UniformTime
from diffusion_lab.objectives.weighting import UniformWeighting
from diffusion_lab.process import ForwardProcess
from diffusion_lab.schedules import Cosine
from tests.conftest import run_cli
from tests.numerics import EPS32

pytestmark = pytest.mark.usefixtures("one_thread")

# Synthetic per-sample loss with closed-form moments: L(t, u) = (C + t)(1 + t·u), u ~ U[−1, 1].
# Its spread grows with t, so p ∝ sqrt(E L²) differs from p ∝ E L (up to 15 % between the ends).
C = 0.1
_T = Polynomial([0.0, 1.0])
MOMENTS = {  # E_u[L^n] as polynomials in t: E u² = 1/3, E u⁴ = 1/5, odd moments 0
    1: C + _T,
    2: (C + _T) ** 2 * (1 + _T**2 / 3),
    4: (C + _T) ** 4 * (1 + 2 * _T**2 + _T**4 / 5),
}


def _loss(t: torch.Tensor) -> torch.Tensor:
    return (C + t) * (1 + t * (2 * torch.rand(t.shape, dtype=t.dtype) - 1))


def _edges(d: ImportanceTime) -> tuple[np.ndarray, np.ndarray]:
    k = np.arange(d.num_bins, dtype=np.float64)
    width = (1 - d.t_min) / d.num_bins
    return d.t_min + k * width, d.t_min + (k + 1) * width


def _bin_moment(d: ImportanceTime, n: int) -> torch.Tensor:
    """E[L^n | bin k] for t uniform in the bin, (K,) float64: the exact mean of a polynomial."""
    a, b = _edges(d)
    antiderivative = MOMENTS[n].integ()
    return torch.from_numpy((antiderivative(b) - antiderivative(a)) / (b - a))


def _warmed(num_bins: int, history: int, batch: int = 512, seed: int = 0) -> ImportanceTime:
    """A density whose buffers were filled by its own draws of the synthetic loss."""
    d = ImportanceTime(num_bins=num_bins, history=history)
    torch.manual_seed(seed)
    for _ in range(10_000):
        if bool((d.counts >= history).all()):
            return d
        t, _ = d.draw(batch, None, "cpu")
        d.observe(t, _loss(t))
    raise AssertionError("the buffers never filled")


def test_warm_up_is_uniform_until_every_bin_holds_h_losses():
    d = ImportanceTime(num_bins=4, history=3, t_min=0.0)
    centres = (torch.arange(4) + 0.5) / 4
    for step in range(3 * 4):  # bin by bin, with very different losses
        assert torch.equal(d.probabilities(), torch.full((4,), 0.25))
        torch.manual_seed(step)
        _, w = d.draw(1000, None, "cpu")
        assert torch.equal(w, torch.ones(1000))  # q/p = 1 exactly while p is uniform
        k = step % 4
        d.observe(centres[k : k + 1], torch.tensor([10.0**k]))
    assert torch.equal(d.counts, torch.full((4,), 3))
    p = d.probabilities()
    assert p.argmax() == 3 and p.argmin() == 0 and p[3] > 0.8  # ∝ 1, 10, 100, 1000 now


def test_ring_buffer_keeps_the_last_h_losses_of_each_bin():
    d = ImportanceTime(num_bins=2, history=4, t_min=0.0)
    first = torch.arange(1.0, 8.0)  # 7 losses into bin 0 in one call: 4..7 survive
    d.observe(torch.full((7,), 0.2), first)
    assert d.counts.tolist() == [7, 0]
    assert sorted(d.losses[0].tolist()) == [4.0, 5.0, 6.0, 7.0]
    d.observe(torch.tensor([0.3, 0.9, 0.4]), torch.tensor([8.0, 50.0, 9.0]))
    assert d.counts.tolist() == [9, 1]
    assert sorted(d.losses[0].tolist()) == [6.0, 7.0, 8.0, 9.0]  # the oldest two replaced
    assert d.losses[1].tolist() == [50.0, 0.0, 0.0, 0.0]


def test_nonfinite_losses_are_not_observed():
    d = ImportanceTime(num_bins=2, history=2, t_min=0.0)
    d.observe(torch.tensor([0.1, 0.2, 0.7]), torch.tensor([float("nan"), 1.0, float("inf")]))
    assert d.counts.tolist() == [1, 0] and torch.isfinite(d.losses).all()


def test_bins_converge_to_sqrt_of_the_second_moment():
    """After warm-up on the synthetic loss, p_k = (1 − ε) r_k/Σr + ε/K with r_k = sqrt(E[L² | k])
    in closed form, up to the sampling error of the H losses per bin (5 standard errors); the
    band is narrow enough to exclude p ∝ E[L | k], the plausible wrong answer."""
    d = _warmed(num_bins=8, history=20_000, batch=8192)
    m2 = _bin_moment(d, 2)
    se = torch.sqrt((_bin_moment(d, 4) - m2**2) / d.history)  # of a mean of H i.i.d. L²
    m2_hat = d.losses.double().square().mean(1)
    assert ((m2_hat - m2).abs() <= 5 * se).all()
    # r̂_k/r_k ∈ [1 − δ, 1 + δ] with δ from the 5-SE band, so r̂_k/Σr̂ lies within a factor
    # (1 + δ)/(1 − δ) of r_k/Σr; plus float32 rounding of the density's own sums (H terms).
    rel = 5 * se / m2
    delta = max(float((torch.sqrt(1 + rel) - 1).max()), float((1 - torch.sqrt(1 - rel)).max()))
    r = m2.sqrt()
    share = r / r.sum()
    floor, k = d.uniform_floor, d.num_bins
    band = (1 - floor) * share * ((1 + delta) / (1 - delta) - 1) + d.history * EPS32
    p = d.probabilities().double()
    assert ((p - ((1 - floor) * share + floor / k)).abs() <= band).all()
    mean_share = _bin_moment(d, 1) / _bin_moment(d, 1).sum()
    assert ((p - ((1 - floor) * mean_share + floor / k)).abs() > band).any()
    assert p.max() / p.min() > 3  # and far from uniform


def test_draws_follow_p_and_carry_q_over_p():
    d = _warmed(num_bins=8, history=50)
    p = d.probabilities()
    torch.manual_seed(1)
    n = 200_000
    t, w = d.draw(n, None, "cpu")
    assert t.min() >= d.t_min and t.max() <= 1.0
    bins = d.bin_of(t)
    freq = torch.bincount(bins, minlength=8).double() / n
    pd = p.double()
    assert ((freq - pd).abs() <= 5 * torch.sqrt(pd * (1 - pd) / n)).all()  # binomial, 5σ
    # w = (1/K)/p of the drawn bin; a t rounded onto a bin edge may re-bin next door (float32)
    same = w == (1.0 / 8) / p[bins]
    assert same.double().mean() > 1 - 1e-4


def test_weighted_loss_is_unbiased_for_the_uniform_objective():
    """Σ_k p_k w_k E[L | k] = (1/K) Σ_k E[L | k] exactly, and a Monte Carlo mean of w·L (float64)
    matches E_{t~U}[L] within 5 of its standard errors, the variance taken in closed form."""
    d = _warmed(num_bins=8, history=50)
    k = d.num_bins
    p = d.probabilities()
    w = (1.0 / k) / p  # the weights the density attaches to each bin, float32
    mean_l = _bin_moment(d, 1)  # E[L | k]
    target = mean_l.mean()  # E_{t~U[t_min,1]} L = C + (1 + t_min)/2
    assert math.isclose(float(target), C + (1 + d.t_min) / 2, rel_tol=1e-12)
    by_bins = (p.double() * w.double() * mean_l).sum()
    assert math.isclose(float(by_bins), float(target), rel_tol=4 * EPS32)  # w: one f32 rounding

    second = (p.double() * w.double() ** 2 * _bin_moment(d, 2)).sum()  # E_p[(wL)²]
    var = second - target**2
    assert second < _bin_moment(d, 2).mean()  # lower variance than uniform t
    torch.manual_seed(2)
    n = 400_000
    t, w_t = d.draw(n, None, "cpu")
    estimate = (w_t.double() * _loss(t.double())).mean()
    assert abs(float(estimate - target)) <= 5 * math.sqrt(float(var) / n)


def test_buffers_round_trip_through_state_dict():
    d = _warmed(num_bins=8, history=20)
    objective = Denoising(d, UniformWeighting())
    state = objective.state_dict()
    assert {"time.losses", "time.counts"} <= set(state)
    restored = Denoising(ImportanceTime(num_bins=8, history=20), UniformWeighting())
    restored.load_state_dict(state)
    assert torch.equal(restored.time.losses, d.losses)
    assert torch.equal(restored.time.counts, d.counts)
    assert torch.equal(restored.time.probabilities(), d.probabilities())
    draws = []
    for density in (d, restored.time):
        torch.manual_seed(3)
        draws.append(density.draw(64, None, "cpu"))
    assert torch.equal(draws[0][0], draws[1][0]) and torch.equal(draws[0][1], draws[1][1])


PROCESS = ForwardProcess(VariancePreserving(), Cosine(), (4,))


def _denoiser(x, state, cond=None):
    return 0.7 * x + 0.1 * torch.sin(3 * x)


@pytest.mark.parametrize(
    "make",
    [
        lambda time: Denoising(time, UniformWeighting()),
        lambda time: Eps(time),
        lambda time: SoftScore(time),
        lambda time: Cold(time),
    ],
    ids=["denoising", "eps", "soft_score", "cold"],
)
def test_objective_weights_the_loss_and_observes_it_unweighted(make):
    density = _warmed(num_bins=4, history=3)
    assert not torch.equal(density.probabilities(), torch.full((4,), 0.25))
    objective = make(density).train()
    before = copy.deepcopy(density)
    x0, z = torch.randn(32, 4), torch.randn(32, 4)
    torch.manual_seed(5)
    t, w = before.draw(32, PROCESS, "cpu")
    torch.manual_seed(5)
    loss = objective(_denoiser, PROCESS, x0, noise=z)
    unweighted = objective(_denoiser, PROCESS, x0, t=t, noise=z)  # t given: nothing observed
    assert torch.equal(loss, unweighted * w)  # the same float32 path, then × w
    before.observe(t, unweighted)  # the history holds the unweighted losses
    assert torch.equal(density.losses, before.losses)
    assert torch.equal(density.counts, before.counts)

    objective.eval()  # validation-like use without t: still weighted, never observed
    torch.manual_seed(6)
    t_eval, w_eval = density.draw(32, PROCESS, "cpu")
    torch.manual_seed(6)
    loss_eval = objective(_denoiser, PROCESS, x0, noise=z)
    assert torch.equal(loss_eval, objective(_denoiser, PROCESS, x0, t=t_eval, noise=z) * w_eval)
    assert torch.equal(density.counts, before.counts)


def test_fixed_densities_keep_weight_one():
    objective = Denoising(UniformTime(), UniformWeighting()).train()
    x0, z = torch.randn(8, 4), torch.randn(8, 4)
    torch.manual_seed(7)
    t = UniformTime()(8, PROCESS, "cpu")
    torch.manual_seed(7)
    loss = objective(_denoiser, PROCESS, x0, noise=z)
    assert torch.equal(loss, objective(_denoiser, PROCESS, x0, t=t, noise=z))


def test_constructor_rejects_bad_knobs():
    for kwargs in ({"num_bins": 0}, {"history": 0}, {"uniform_floor": 0.0}, {"t_min": 1.0}):
        with pytest.raises(ValueError, match="objective.time"):
            ImportanceTime(**kwargs)


def test_train_cli_with_importance_time(tmp_path):
    """The real config: 6 steps × 16 images, 4 bins × 2 losses (warm after a step or two); the
    checkpoint holds the history, and validation (t given) added nothing to it."""
    proc = run_cli(
        "train.py",
        "debug=fast",
        "evaluation.metrics=[]",
        "objective/time=importance",
        "objective.time.num_bins=4",
        "objective.time.history=2",
        "backbone.model_channels=8",
        "backbone.attn_resolutions=[]",
        f"hydra.run.dir={tmp_path}/run",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=True)
    counts = ckpt["state_dict"]["objective.time.counts"]
    assert ckpt["global_step"] == 6 and int(counts.sum()) == 6 * 16
    assert (counts >= 2).all() and torch.isfinite(ckpt["state_dict"]["objective.time.losses"]).all()


def _observe_on_rank(rank: int, world: int, init_file: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    d = ImportanceTime(num_bins=4, history=3, t_min=0.0)
    t, loss = _rank_batch(rank)  # unequal batch sizes: 5 and 2
    d.observe(t, loss)
    torch.save(d.state_dict(), f"{out}.{rank}")
    dist.destroy_process_group()


def _rank_batch(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = 5 if rank == 0 else 2
    g = torch.Generator().manual_seed(rank)
    return torch.rand(n, generator=g), torch.rand(n, generator=g) + rank


def test_ranks_share_one_history_under_ddp(tmp_path):
    """gloo, 2 processes: each rank observes its own (unequally sized) batch and ends with the
    history of both batches in rank order, the same on every rank."""
    import torch.multiprocessing as mp

    out = str(tmp_path / "state")
    mp.start_processes(
        _observe_on_rank, args=(2, str(tmp_path / "init"), out), nprocs=2, start_method="spawn"
    )
    states = [torch.load(f"{out}.{rank}", weights_only=True) for rank in range(2)]
    single = ImportanceTime(num_bins=4, history=3, t_min=0.0)
    batches = [_rank_batch(rank) for rank in range(2)]
    single.observe(torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]))
    for state in states:
        assert torch.equal(state["counts"], single.counts) and int(state["counts"].sum()) == 7
        assert torch.equal(state["losses"], single.losses)
