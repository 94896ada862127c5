"""Property-based tests (hypothesis) over bases, schedules and forward processes.

Random batch sizes, channels, image sides (square and not) and times; each example seeds its own
torch generator from a drawn integer, and the settings are derandomised with no example database,
so a run is the same every time and a failure reproduces from the printed falsifying example.

Dtype conventions pinned here (DESIGN §3: diffusion arithmetic in fp32):
  - bases keep the input dtype (float64 in, float64 out), but their matrices are stored as float32
    buffers, so a float64 round trip is only float32-accurate (~1e-7), not float64-accurate;
  - schedules are elementwise and keep the dtype and shape of t;
  - ForwardProcess.sample / degrade always return float32, whatever the dtype of x0.
"""

import functools
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.data import TensorDataset

from diffusion_lab.bases import DCT, PCA, Fourier, Identity
from diffusion_lab.data.statistics import compute_dataset_statistics
from diffusion_lab.degradations import (
    ColdBlur,
    Pixelate,
    Snow,
    VarianceExploding,
    VariancePreserving,
)
from diffusion_lab.degradations.blur import Blur, BlurNoise
from diffusion_lab.degradations.gud import GUD
from diffusion_lab.degradations.mask import Mask
from diffusion_lab.process import ForwardProcess
from diffusion_lab.schedules import Cosine, EDMSchedule, LinearBeta, Sigmoid
from diffusion_lab.schedules.blur import GeometricBlur
from diffusion_lab.schedules.blur_w2 import BlurW2
from tests.numerics import f32_tol

# derandomize: the same examples on every run (CI); database=None: nothing written to disk.
PROPS = settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
CHEAP = settings(PROPS, max_examples=30)  # pure schedule arithmetic on a handful of numbers


pytestmark = pytest.mark.usefixtures("one_thread")


# -- strategies -----------------------------------------------------------------------------
seeds = st.integers(0, 2**31 - 1)
batches = st.integers(1, 4)
sides = st.integers(2, 12)
image_shapes = st.tuples(st.integers(1, 3), sides, sides)
vector_shapes = st.tuples(st.integers(1, 16))
unit = st.floats(0.0, 1.0)
# times that hit the ends and the level grid of the Cold operators as well as arbitrary floats
times = st.one_of(unit, st.sampled_from([0.0, 1.0, 0.5, 0.25, 1 / 3, 1e-4]))
coefficients = st.floats(-2.0, 2.0)


def sorted_pair(lo: float = 0.0):
    return st.tuples(st.floats(lo, 1.0), st.floats(lo, 1.0)).map(sorted)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(shape, seed: int, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=gen(seed), dtype=dtype)


def images_in_range(shape, seed: int) -> torch.Tensor:
    """Data in [−1, 1] (DESIGN §4)."""
    return torch.rand(shape, generator=gen(seed)) * 2 - 1


@functools.cache
def statistics(shape: tuple[int, ...]):
    """Real DatasetStatistics (with PCA) of 32 fixed random samples of this shape."""
    n = 32
    x = torch.rand(n, *shape, generator=gen(math.prod(shape))) * 2 - 1
    return compute_dataset_statistics(TensorDataset(x, torch.zeros(n)), max_images=n, pca=True)


def close(actual, expected, atol=1e-5, rtol=1e-5):
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol)


# -- derived float32 tolerances (tests/numerics.py) -------------------------------------------
def norm(*xs) -> float:
    """The largest per-sample 2-norm: it bounds every coefficient of an orthonormal transform."""
    return max(x.detach().double().flatten(1).norm(dim=1).max().item() for x in xs)


def basis_depth(basis, shape) -> int:
    """Inner length of one float32 basis transform: 0 (identity), H + W (DCT, Fourier), D (PCA)."""
    if isinstance(basis, Identity):
        return 0
    return math.prod(shape) if isinstance(basis, PCA) else shape[-1] + shape[-2]


def transform_tol(basis, shape, *xs, transforms: int = 1) -> float:
    """Derived: each transform rounds over its inner length plus the stored matrix (n + 1 steps)."""
    depth = basis_depth(basis, shape)
    return f32_tol(transforms * (depth + 1), norm(*xs)) if depth else 0.0


def degrade_terms(process) -> int:
    """Rounding steps of one float32 `degrade`: two basis transforms (linear processes), an
    rfft2/irfft2 pair (log2 HW each) or levels × taps (Cold blur), the pooled window plus 16
    bicubic taps (pixelate), a few elementwise operations (snow)."""
    deg, shape = process.degradation, process.data_shape
    if process.linear:
        return 2 * (basis_depth(process.basis, shape) + 1) + 1
    if isinstance(deg, ColdBlur):
        if deg.padding == "circular" and hasattr(deg, "transfer"):
            return 2 * math.ceil(math.log2(shape[-2] * shape[-1])) + 2
        return deg.num_levels * deg.kernel_size**2
    if isinstance(deg, Pixelate):
        return shape[-2] * shape[-1] + 16
    return 4


# -- bases ----------------------------------------------------------------------------------
BASES = ["identity", "dct", "fourier", "pca"]


def make_basis(kind: str, shape):
    if kind == "identity":
        return Identity()
    if kind == "pca":
        return PCA().setup(shape, statistics(tuple(shape)))
    return {"dct": DCT, "fourier": Fourier}[kind](data_shape=shape)


@PROPS
@given(kind=st.sampled_from(BASES), batch=batches, shape=image_shapes, seed=seeds)
def test_basis_round_trip_norm_shape_and_dtype(kind, batch, shape, seed):
    basis = make_basis(kind, shape)
    x = randn((batch, *shape), seed)
    c = basis(x)
    assert c.shape == x.shape and c.dtype == torch.float32
    tol = transform_tol(basis, shape, x)  # derived: (n + 1)·eps32·‖x‖ per float32 transform
    close(basis.inverse(c), x, atol=2 * tol, rtol=0)  # Uᵀ U = I
    close(basis(basis.inverse(x)), x, atol=2 * tol, rtol=0)  # U Uᵀ = I
    c_norm = c.double().flatten(1).norm(dim=1)  # an isometry; norms in float64
    close(c_norm, x.double().flatten(1).norm(dim=1), atol=tol, rtol=0)
    x64, c64 = x.double(), basis(x.double())  # float64: batch and single rows agree to ~1e-16
    for i in range(batch):  # acts on each sample on its own
        close(c64[i : i + 1], basis(x64[i : i + 1]), atol=1e-12, rtol=0)


@PROPS
@given(
    kind=st.sampled_from(BASES),
    batch=batches,
    shape=st.one_of(image_shapes, vector_shapes),
    a=coefficients,
    b=coefficients,
    seed=seeds,
)
def test_basis_is_linear(kind, batch, shape, a, b, seed):
    if kind in ("dct", "fourier") and len(shape) != 3:
        with pytest.raises(ValueError, match="needs images"):
            make_basis(kind, shape)
        return
    basis = make_basis(kind, shape)
    # float64: a fixed (float32-stored) matrix is exactly linear, up to float64 rounding
    x, y = randn((2, batch, *shape), seed, dtype=torch.float64)
    close(basis(a * x + b * y), a * basis(x) + b * basis(y), atol=1e-12, rtol=0)
    inverse = a * basis.inverse(x) + b * basis.inverse(y)
    close(basis.inverse(a * x + b * y), inverse, atol=1e-12, rtol=0)


@PROPS
@given(kind=st.sampled_from(BASES), batch=batches, shape=image_shapes, seed=seeds)
def test_basis_keeps_float64_with_float32_accuracy(kind, batch, shape, seed):
    """float64 in, float64 out; the matrices are float32 buffers, so only float32 accuracy."""
    basis = make_basis(kind, shape)
    x = randn((batch, *shape), seed, dtype=torch.float64)
    c = basis(x)
    assert c.dtype == basis.inverse(c).dtype == torch.float64 and c.shape == x.shape
    close(basis.inverse(c), x, atol=1e-5, rtol=1e-5)
    # the float32 path against the float64 one: derived, (n + 1)·eps32·‖x‖ plus x rounded once
    tol = transform_tol(basis, shape, x) + f32_tol(1, norm(x))
    close(basis(x.float()).double(), c, atol=tol, rtol=0)


@PROPS
@given(kind=st.sampled_from(["dct", "fourier"]), batch=batches, shape=image_shapes, seed=seeds)
def test_separable_bases_act_per_channel_with_the_mean_as_dc(kind, batch, shape, seed):
    basis = make_basis(kind, shape)
    c_, h, w = shape
    # float64: the float32 matrix buffers are fixed, so per-channel calls agree to ~1e-16 and
    # DC = mean·√(HW) up to their rounding (row 0 is 1/√N ± u: <= 2u·Σ|x|/√(HW) ≈ 1e-6)
    x = randn((batch, *shape), seed, dtype=torch.float64)
    c = basis(x)
    for k in range(c_):
        close(c[:, k : k + 1], basis(x[:, k : k + 1]), atol=1e-12, rtol=0)
    # row 0 of both 1-D bases is the constant 1/√N: the DC coefficient is mean · √(HW)
    close(c[:, :, 0, 0], x.mean((2, 3)) * math.sqrt(h * w), atol=1e-4)
    lam = basis.frequencies_squared
    assert lam.shape == (1, h, w) and lam[0, 0, 0] == 0 and (lam >= 0).all()
    # frequencies grow along both axes (rows are ordered by increasing frequency)
    assert (lam[:, 1:, :] >= lam[:, :-1, :]).all() and (lam[:, :, 1:] >= lam[:, :, :-1]).all()


@PROPS
@given(shape=st.one_of(image_shapes, vector_shapes))
def test_pca_decorrelates_its_data_by_decreasing_variance(shape):
    """On the data it was fitted to, the PCA coefficients have covariance diag(variance)."""
    stats = statistics(tuple(shape))
    basis = make_basis("pca", shape)
    v = basis.variance.flatten()
    assert basis.variance.shape == tuple(shape) and (v[1:] <= v[:-1]).all() and (v >= 0).all()
    c = basis(stats.images.double()).flatten(1)
    c = c - c.mean(0)
    cov = c.T @ c / len(c)  # the statistics use the population covariance
    close(cov, torch.diag(v.double()), atol=1e-5, rtol=1e-4)


# -- log-SNR schedules ----------------------------------------------------------------------
LOGSNR_SCHEDULES = [
    LinearBeta(),
    LinearBeta(beta_min=0.01, beta_max=5.0),
    Cosine(),
    Cosine(logsnr_min=-8, logsnr_max=8),
    Sigmoid(),
    Sigmoid(start=0.0, end=3.0, tau=0.7),
    EDMSchedule(),
    EDMSchedule(sigma_min=0.002),
]
schedule_param = pytest.mark.parametrize("schedule", LOGSNR_SCHEDULES, ids=repr)
T_MIN = 1e-4  # the smallest t the time densities draw (objectives/time.py)


@schedule_param
@CHEAP
@given(pair=sorted_pair())
def test_logsnr_decreases_in_t(schedule, pair):
    t1, t2 = pair
    for dtype in (torch.float32, torch.float64):
        lam1, lam2 = schedule.logsnr(torch.tensor([t1, t2], dtype=dtype)).tolist()
        assert lam1 >= lam2
    if t2 - t1 >= 1e-4:  # strictly (in float64), away from float rounding
        assert lam1 > lam2


@schedule_param
@CHEAP
@given(t=st.floats(T_MIN, 1.0), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_logsnr_is_finite_on_the_training_range_and_largest_at_zero(schedule, t, dtype):
    lam, lam0, lam1 = schedule.logsnr(torch.tensor([t, 0.0, 1.0], dtype=dtype))
    assert math.isfinite(lam) and math.isfinite(lam1)
    assert lam0 >= lam >= lam1
    if (
        getattr(schedule, "logsnr_max", math.inf) == math.inf
        and getattr(schedule, "sigma_min", 0) == 0
    ):
        assert lam0 == math.inf  # t = 0 is clean data


@schedule_param
@CHEAP
@given(
    shape=st.lists(st.integers(1, 4), min_size=0, max_size=4).map(tuple),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=seeds,
)
def test_schedules_are_elementwise_on_any_shape(schedule, shape, dtype, seed):
    """GUD calls logsnr on (B, C, H, W) clocks: the schedule must not care about the shape."""
    t = torch.rand(shape, generator=gen(seed), dtype=dtype)
    lam = schedule.logsnr(t)
    assert lam.shape == t.shape and lam.dtype == dtype
    flat = schedule.logsnr(t.flatten())
    close(lam, flat.view(shape), atol=0, rtol=0)
    back = schedule.t_from_logsnr(lam)
    assert back.shape == t.shape and back.dtype == dtype


@schedule_param
@CHEAP
@given(t=unit)
def test_logsnr_inverse_round_trip(schedule, t):
    tt = torch.tensor([t], dtype=torch.float64)
    lam = schedule.logsnr(tt)
    close(schedule.t_from_logsnr(lam), tt, atol=1e-6, rtol=0)
    if T_MIN <= t:  # and the other way round, on the finite part
        close(schedule.logsnr(schedule.t_from_logsnr(lam)), lam, atol=1e-6, rtol=1e-6)


@schedule_param
@CHEAP
@given(
    t=st.lists(st.floats(T_MIN, 1.0), min_size=1, max_size=4),
    shape=st.one_of(image_shapes, vector_shapes),
)
def test_vp_and_ve_share_the_noise_to_signal_ratio(schedule, t, shape):
    tt = torch.tensor(t, dtype=torch.float64)  # the identities in float64
    a_vp, s_vp = VariancePreserving().alpha_sigma(schedule, tt, shape)
    a_ve, s_ve = VarianceExploding().alpha_sigma(schedule, tt, shape)
    iso = (len(t), *[1] * len(shape))
    assert a_vp.shape == s_vp.shape == a_ve.shape == s_ve.shape == iso
    assert a_vp.dtype == s_ve.dtype == torch.float64
    ones = torch.ones(iso, dtype=torch.float64)
    close(a_vp**2 + s_vp**2, ones, atol=1e-12, rtol=0)  # variance preserving
    assert (a_ve == 1).all()
    close(s_vp / a_vp, s_ve / a_ve, rtol=1e-10, atol=0)
    lam = schedule.logsnr(tt).view(iso)
    close(2 * torch.log(a_vp / s_vp), lam, rtol=1e-10, atol=1e-10)


# -- blur schedules -------------------------------------------------------------------------
@functools.cache
def blur_w2(shape, sigma_min=0.05, sigma_max=8.0) -> BlurW2:
    deg = Blur()
    deg.setup(shape, statistics(shape))
    schedule = BlurW2(sigma_min, sigma_max)
    schedule.setup(deg, statistics(shape))
    return schedule


blur_schedules = st.one_of(
    st.tuples(st.floats(0.05, 2.0), st.floats(1.1, 6.0)).map(
        lambda p: GeometricBlur(p[0], p[0] * p[1])
    ),
    image_shapes.map(blur_w2),
)


def w2_arc(schedule_shape, sigma_a: float, sigma_b: float, n: int = 400) -> float:
    """Arc length of the blurred data between two σ_B, on a fine geometric grid of its own:
    Σ √(Σ_i E[c_i²] (α_i(σ_k+1) − α_i(σ_k))²), α_i(σ) = exp(−λ_i σ²/2) in the DCT basis."""
    stats = statistics(schedule_shape)
    basis = DCT(data_shape=schedule_shape)
    m = stats.dct_variance.double() + basis(stats.mean[None])[0].double() ** 2  # E[c²]
    sigma = torch.logspace(math.log10(sigma_a), math.log10(sigma_b), n, dtype=torch.float64)
    alpha = torch.exp(-basis.frequencies_squared.double() * sigma.view(-1, 1, 1, 1) ** 2 / 2)
    return ((alpha[1:] - alpha[:-1]) ** 2 * m).flatten(1).sum(1).sqrt().sum().item()


@PROPS
@given(schedule=blur_schedules, pair=sorted_pair(), t=st.lists(unit, min_size=1, max_size=5))
def test_blur_schedules_grow_from_zero_to_sigma_max(schedule, pair, t):
    tt = torch.tensor(t)
    s = schedule.sigma_blur(tt)
    assert s.shape == tt.shape and s.dtype == torch.float32 and torch.isfinite(s).all()
    assert (s[tt == 0] == 0).all()  # clean data at t = 0
    lo, hi = schedule.sigma_min * (1 - 1e-5), schedule.sigma_max * (1 + 1e-5)
    assert ((s[tt > 0] >= lo) & (s[tt > 0] <= hi)).all()
    s1, s2 = schedule.sigma_blur(torch.tensor(pair, dtype=torch.float32))
    assert s1 <= s2 * (1 + 1e-6)
    end = schedule.sigma_blur(torch.tensor([0.0, 1.0]))[1].item()
    if isinstance(schedule, GeometricBlur):
        assert end == pytest.approx(schedule.sigma_max, rel=1e-5)


@PROPS
@given(shape=image_shapes, steps=st.integers(2, 6))
def test_blur_w2_takes_equal_wasserstein_arc_steps(shape, steps):
    """The defining property: equal steps in t cover equal W2 arc lengths of the blurred data.

    (Arc, not chord: the curve σ ↦ α(σ) bends, so finite steps have shorter, unequal chords.)
    On tiny images every frequency is gone long before σ_max: t = 1 then lands where the arc
    stops growing in float32, which is fine as long as nothing is left to travel after it."""
    schedule = blur_w2(shape)
    t = torch.arange(0, steps + 1, dtype=torch.float32) / steps
    sigma = schedule.sigma_blur(t).tolist()
    sigma[0] = schedule.sigma_min  # σ_B(0) = 0 is the clean data, at the start of the arc
    arcs = [w2_arc(shape, a, b) for a, b in zip(sigma[:-1], sigma[1:])]
    total = w2_arc(shape, schedule.sigma_min, schedule.sigma_max, n=4000)
    assert sum(arcs) == pytest.approx(total, rel=0.01)
    assert max(arcs) == pytest.approx(total / steps, rel=0.02)
    assert min(arcs) == pytest.approx(total / steps, rel=0.02)


# -- forward processes ----------------------------------------------------------------------
def _gaussian(deg, sched):
    return lambda: (deg(), sched())


PROCESS_FACTORIES = {
    # name: (factory -> (degradation, schedule), works on vectors too)
    "vp_cosine": (_gaussian(VariancePreserving, Cosine), True),
    "vp_linear": (_gaussian(VariancePreserving, LinearBeta), True),
    "vp_sigmoid": (_gaussian(VariancePreserving, Sigmoid), True),
    "vp_edm": (_gaussian(VariancePreserving, EDMSchedule), True),
    "ve_edm": (_gaussian(VarianceExploding, EDMSchedule), True),
    "ve_cosine": (_gaussian(VarianceExploding, Cosine), True),
    "blur_geometric": (lambda: (Blur(noise=0.01), GeometricBlur(0.5, 8.0)), False),
    "blur_w2": (lambda: (Blur(noise=0.01), BlurW2(0.05, 8.0)), False),
    "blur_noise_w2": (lambda: (BlurNoise(0.01, 1.0), BlurW2(0.05, 8.0)), False),
    "blur_noise_geometric": (lambda: (BlurNoise(0.05, 2.0), GeometricBlur(0.3, 4.0)), False),
    "mask": (lambda: (Mask(fade=1.0), None), False),
    "gud_dct_frequency_whiten": (lambda: (GUD(DCT(), 1.0, "frequency", True), Cosine()), False),
    "gud_fourier_frequency": (lambda: (GUD(Fourier(), 0.5, "frequency"), LinearBeta()), False),
    "gud_identity_row": (lambda: (GUD(Identity(), 0.5, "row"), Cosine()), False),
    "gud_identity_column": (lambda: (GUD(Identity(), 2.0, "column", True), Sigmoid()), False),
    "gud_pca_variance_whiten": (lambda: (GUD(PCA(), 1.0, "variance", True), Cosine()), True),
    "gud_identity_none": (lambda: (GUD(Identity(), 1.0, "none"), Cosine()), True),
    # Cold Diffusion operators (linear=False)
    "cold_blur_circular": (lambda: (ColdBlur(num_levels=12, kernel_size=5), None), False),
    "cold_blur_reflect": (
        lambda: (
            ColdBlur(num_levels=6, kernel_size=3, kernel_std=0.5, padding="reflect"),
            None,
        ),
        False,
    ),
    "cold_blur_exponential": (
        lambda: (
            ColdBlur(8, 5, 0.3, blur_routine="exponential", to_mean_last_step=False),
            None,
        ),
        False,
    ),
    "pixelate_nearest": (lambda: (Pixelate(num_levels=6, min_size=2), None), False),
    "pixelate_bicubic_noisy": (
        lambda: (Pixelate(num_levels=5, min_size=2, upsample="bicubic", noise=0.05), None),
        False,
    ),
    "snow": (lambda: (Snow(num_levels=8, num_layers=2, density=0.3), None), False),
}
COLD = [name for name in PROCESS_FACTORIES if PROCESS_FACTORIES[name][0]()[0].linear is False]
LINEAR = [name for name in PROCESS_FACTORIES if name not in COLD]


@functools.cache
def make_process(name: str, shape: tuple[int, ...]) -> ForwardProcess:
    """Built as build.py does: ForwardProcess(degradation, schedule, data_shape).setup(stats)."""
    degradation, schedule = PROCESS_FACTORIES[name][0]()
    return ForwardProcess(degradation, schedule, shape).setup(statistics(shape))


# smaller images for processes: their set-up fits priors (GMMs) per data shape, cached by shape
process_images = st.tuples(st.integers(1, 3), st.integers(2, 8), st.integers(2, 8))


def shapes_for(name: str):
    vectors_ok = PROCESS_FACTORIES[name][1]
    return st.one_of(process_images, vector_shapes) if vectors_ok else process_images


all_processes = pytest.mark.parametrize("name", sorted(PROCESS_FACTORIES))
cold_processes = pytest.mark.parametrize("name", sorted(COLD))
PER_PROCESS = settings(PROPS, max_examples=5)  # × 23 processes


def full_shape(process, batch):
    return (batch, *process.data_shape)


def snr(alpha, sigma):
    return (alpha / sigma) ** 2  # +inf where σ = 0


@all_processes
@PER_PROCESS
@given(data=st.data(), t=st.lists(times, min_size=1, max_size=4))
def test_state_broadcasts_and_is_finite(name, data, t):
    process = make_process(name, data.draw(shapes_for(name)))
    tt = torch.tensor(t)
    state = process.state(tt)
    full = full_shape(process, len(t))
    for x in (state.alpha, state.sigma):
        assert x.dtype == torch.float32 and x.ndim == len(full) and x.shape[0] == len(t)
        assert torch.broadcast_shapes(x.shape, full) == full
        assert torch.isfinite(x).all()
        if process.isotropic:
            assert x.shape == (len(t), *[1] * len(process.data_shape))
    assert ((state.alpha >= 0) & (state.alpha <= 1 + 1e-6)).all() and (state.sigma >= 0).all()
    assert state.noise_cond.shape == (len(t),) and torch.isfinite(state.noise_cond).all()


@all_processes
@PER_PROCESS
@given(data=st.data(), pair=sorted_pair())
def test_signal_and_snr_never_grow_with_t(name, data, pair):
    """Per component: α(t) and SNR(t) = α²/σ² are non-increasing, σ(t) non-decreasing."""
    process = make_process(name, data.draw(shapes_for(name)))
    state = process.state(torch.tensor(pair, dtype=torch.float32))
    full = full_shape(process, 2)
    alpha, sigma = state.alpha.expand(full), state.sigma.expand(full)
    assert (alpha[0] >= alpha[1] - 1e-6).all()
    assert (sigma[0] <= sigma[1] * (1 + 1e-6) + 1e-7).all()
    r = snr(alpha, sigma)
    assert (r[0] >= r[1] * (1 - 1e-4)).all()


@all_processes
@PER_PROCESS
@given(data=st.data(), batch=batches, seed=seeds)
def test_clean_data_at_t0(name, data, batch, seed):
    process = make_process(name, data.draw(shapes_for(name)))
    x0 = images_in_range(full_shape(process, batch), seed)
    t0 = torch.zeros(batch)
    state = process.state(t0)
    degraded = process.degrade(x0, t0)
    tol = f32_tol(degrade_terms(process), norm(x0))  # derived: float32 degrade (see above)
    close(degraded, x0, atol=tol, rtol=0)
    if process.linear:  # t = 0 is clean data: α = 1 and σ = 0 (up to float rounding)
        close(state.alpha.expand_as(x0), torch.ones_like(x0), atol=1e-6, rtol=0)
        assert (state.sigma <= 1e-6).all()
    z = randn(x0.shape, seed + 1)
    x_t, _, _ = process.sample(x0, t0, z)
    floor = state.sigma.amax().item()  # Cold operators keep their noise σ at t = 0
    close(x_t, x0, atol=tol + 6 * floor, rtol=0)


@all_processes
@PER_PROCESS
@given(
    data=st.data(),
    t=st.lists(times, min_size=1, max_size=4),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=seeds,
)
def test_sample_is_mean_plus_noise_in_the_basis(name, data, t, dtype, seed):
    """x_t = Uᵀ(α ⊙ U x0 + σ ⊙ z) = degrade(x0, t) + Uᵀ(σ ⊙ z), in float32 whatever x0 is."""
    process = make_process(name, data.draw(shapes_for(name)))
    tt = torch.tensor(t)
    full = full_shape(process, len(t))
    x0 = images_in_range(full, seed).to(dtype)
    z = randn(full, seed + 1)
    x_t, z_out, state = process.sample(x0, tt, z)
    assert x_t.shape == full and x_t.dtype == torch.float32
    assert torch.equal(z_out, z)
    mean = process.degrade(x0, tt)
    assert mean.shape == full and mean.dtype == torch.float32
    if process.linear:
        basis = process.basis
        c_t = state.alpha * basis(x0.float()) + state.sigma * z
        # derived: float32 transforms: x_t = Uᵀ c_t then U x_t (2); x_t, the mean (2) and Uᵀ σz (4)
        tol = transform_tol(basis, process.data_shape, c_t, transforms=2)
        close(basis(x_t), c_t, atol=tol, rtol=0)
        noise = state.sigma * z
        tol = transform_tol(basis, process.data_shape, c_t, noise, c_t - noise, transforms=4)
        close(x_t, mean + basis.inverse(noise), atol=tol + f32_tol(1, norm(x_t)), rtol=0)
    else:
        close(x_t, mean + state.sigma * z, atol=1e-5, rtol=1e-5)


@all_processes
@PER_PROCESS
@given(data=st.data(), t=st.lists(times, min_size=2, max_size=4), a=coefficients, seed=seeds)
def test_degrade_is_affine_and_per_sample(name, data, t, a, seed):
    """Every operator here is affine in x0 (snow: (1 − m) x0 + m; all others linear) and
    treats each sample with its own t, however the batch mixes times (Cold levels are grouped)."""
    process = make_process(name, data.draw(shapes_for(name)))
    tt = torch.tensor(t)
    x, y = images_in_range((2, *full_shape(process, len(t))), seed)
    d = process.degrade(x, tt)
    # derived (degrade is float32 only): its rounding steps on each input, scaled as combined
    terms = degrade_terms(process) + 2
    tol = f32_tol(terms, norm(a * x + (1 - a) * y) + abs(a) * norm(x) + abs(1 - a) * norm(y))
    affine = a * d + (1 - a) * process.degrade(y, tt)
    close(process.degrade(a * x + (1 - a) * y, tt), affine, atol=tol, rtol=0)
    for i in range(len(t)):  # batch against single rows: derived, twice one degrade's rounding
        tol = f32_tol(2 * degrade_terms(process), norm(x[i : i + 1]))
        close(d[i : i + 1], process.degrade(x[i : i + 1], tt[i : i + 1]), atol=tol, rtol=0)


@all_processes
@settings(PROPS, max_examples=2)  # the prior fits are the slow part of a process
@given(data=st.data(), batch=batches, seed=seeds)
def test_prior_draws_data_shaped_samples(name, data, batch, seed):
    process = make_process(name, data.draw(shapes_for(name)))
    if not process.has_prior:
        with pytest.raises(NotImplementedError, match="restoration"):
            process.prior(batch, generator=gen(seed))
        return
    x1 = process.prior(batch, generator=gen(seed))
    assert x1.shape == full_shape(process, batch) and x1.dtype == torch.float32
    assert torch.isfinite(x1).all()
    assert torch.equal(x1, process.prior(batch, generator=gen(seed)))  # seeded


# -- Cold Diffusion operators ---------------------------------------------------------------
@cold_processes
@PER_PROCESS
@given(data=st.data(), t=st.lists(times, min_size=1, max_size=4), seed=seeds)
def test_cold_operators_are_deterministic_and_exact_at_t0(name, data, t, seed):
    process = make_process(name, data.draw(shapes_for(name)))
    tt = torch.tensor(t)
    x0 = images_in_range(full_shape(process, len(t)), seed)
    d = process.degrade(x0, tt)
    assert d.shape == x0.shape and d.dtype == torch.float32 and torch.isfinite(d).all()
    assert torch.equal(d, process.degrade(x0, tt))
    deg = process.degradation
    at0 = deg.degrade(x0, torch.zeros(len(t)))
    if isinstance(deg, ColdBlur) and deg.padding == "circular":
        tol = f32_tol(degrade_terms(process), norm(x0))  # derived: rfft2 + irfft2 in float32
        close(at0, x0, atol=tol, rtol=0)  # the FFT path: identity up to rounding
    else:
        assert torch.equal(at0, x0)


@CHEAP
@given(num_levels=st.integers(1, 1000), data=st.data())
def test_cold_levels_hit_the_grid_and_grow(num_levels, data):
    deg = ColdBlur(num_levels=num_levels, kernel_size=1)
    i = data.draw(st.integers(0, num_levels))
    assert deg.level(torch.tensor([i / num_levels], dtype=torch.float32)).item() == i
    t1, t2 = data.draw(sorted_pair())
    k1, k2 = deg.level(torch.tensor([t1, t2]))
    assert 0 <= k1 <= k2 <= num_levels
    ends = deg.level(torch.tensor([0.0, 1.0]))
    assert ends.tolist() == [0, num_levels]


@pytest.mark.parametrize("name", sorted(n for n in COLD if "bicubic" not in n))
@PER_PROCESS
@given(data=st.data(), t=st.lists(times, min_size=1, max_size=4), seed=seeds)
def test_cold_operators_stay_in_range(name, data, t, seed):
    """Blur (normalised positive kernels) and area + nearest pixelation average pixels, so each
    channel stays inside its range; snow blends towards white, staying in [min x0, 1]."""
    process = make_process(name, data.draw(shapes_for(name)))
    tt = torch.tensor(t)
    x0 = images_in_range(full_shape(process, len(t)), seed)
    d = process.degrade(x0, tt)
    if isinstance(process.degradation, Snow):
        assert (d >= x0.amin() - 1e-6).all() and (d <= 1 + 1e-6).all() and (d >= x0 - 1e-6).all()
        return
    lo, hi = x0.amin((2, 3), keepdim=True), x0.amax((2, 3), keepdim=True)
    assert ((d >= lo - 1e-5) & (d <= hi + 1e-5)).all()


@PROPS
@given(
    shape=image_shapes,
    num_levels=st.integers(1, 12),
    kernel_size=st.sampled_from([1, 3, 5]),
    std=st.floats(0.1, 1.0),
    t=st.lists(times, min_size=1, max_size=4),
    seed=seeds,
)
def test_circular_cold_blur_fft_equals_convolution_and_keeps_channel_means(
    shape, num_levels, kernel_size, std, t, seed
):
    tt = torch.tensor(t)
    x0 = images_in_range((len(t), *shape), seed)
    conv = ColdBlur(num_levels, kernel_size, std, to_mean_last_step=False)  # no setup: conv loop
    fft = ColdBlur(num_levels, kernel_size, std, to_mean_last_step=False)
    fft.setup(shape, None)
    d = fft.degrade(x0, tt)
    # the convolutions in float64 as the reference; derived for the float32 FFT path:
    # rfft2 + irfft2 (log2 HW rounding steps each) and the complex64 transfer, on ‖x‖
    reference, x64 = conv.degrade(x0.double(), tt), x0.double()
    fft_tol = f32_tol(2 * math.ceil(math.log2(shape[1] * shape[2])) + 2, norm(x0))
    close(d.double(), reference, atol=fft_tol, rtol=0)
    mean = x64.mean((2, 3))  # circular blur keeps the mean (reference in float64)
    close(d.double().mean((2, 3)), mean, atol=fft_tol, rtol=0)
    last = ColdBlur(num_levels, kernel_size, std)  # to_mean_last_step: level T is the mean
    last.setup(shape, None)
    d1 = last.degrade(x0, torch.ones(len(t)))
    # derived: the FFT path, then a float32 mean over H·W pixels of size <= 1
    tol = fft_tol + f32_tol(shape[1] * shape[2], 1.0)
    close(d1.double(), mean[..., None, None].expand_as(x64), atol=tol, rtol=0)


@PROPS
@given(
    shape=image_shapes,
    num_levels=st.integers(1, 20),
    density=st.floats(0.01, 1.0),
    pair=sorted_pair(),
    seed=st.integers(0, 1000),
)
def test_snow_only_accumulates(shape, num_levels, density, pair, seed):
    snow = Snow(num_levels=num_levels, density=density, seed=seed)
    m = snow.mask(torch.tensor(pair), shape[-2:])
    assert m.shape == (2, 1, *shape[-2:]) and ((m >= 0) & (m <= 1)).all()
    assert (m[0] <= m[1]).all()  # flakes only ever appear, opacity only grows
    assert torch.equal(m, snow.mask(torch.tensor(pair), shape[-2:]))
