"""Bases: orthonormality, DCT = scipy, Laplacian eigenbases, heat semigroup, PCA recovery."""

import math

import numpy as np
import pytest
import scipy.fft
import torch
from torch.utils.data import TensorDataset

from diffusion_lab.bases import DCT, PCA, Fourier, Identity
from diffusion_lab.data.statistics import compute_dataset_statistics
from tests.numerics import EPS32, f32_tol

IMAGE_SHAPES = [(1, 8, 8), (3, 16, 16), (1, 8, 12), (2, 5, 7)]


pytestmark = pytest.mark.usefixtures("one_thread")


def pca_basis(shape, n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g)
    stats = compute_dataset_statistics(TensorDataset(x, torch.zeros(n)), max_images=0)
    return PCA().setup(shape, stats)


def make_basis(kind, shape):
    if kind == "identity":
        return Identity()
    if kind == "pca":
        return pca_basis(shape)
    return {"dct": DCT, "fourier": Fourier}[kind](data_shape=shape)


def round_trip_tol(basis, x):
    """Derived tolerance of one float32 transform of x: its inner length n (H + W for a separable
    basis, D for PCA, 0 for the identity) plus one rounding of the stored matrix, times the
    largest per-sample norm (every coefficient is a unit vector's dot product with x)."""
    depth = {Identity: 0, PCA: math.prod(x.shape[1:])}.get(type(basis), sum(x.shape[-2:]))
    return f32_tol(depth + 1, x.flatten(1).norm(dim=1).max()) if depth else 0.0


CASES = [(k, s) for k in ("identity", "dct", "fourier") for s in IMAGE_SHAPES[:3]]
# PCA: D <= 96 keeps the eigendecompositions cheap
CASES += [("pca", s) for s in [(1, 8, 8), (1, 8, 12), (3, 4, 4), (2,), (5,)]] + [("identity", (3,))]


@pytest.mark.parametrize("kind,shape", CASES)
def test_orthonormal(kind, shape):
    basis = make_basis(kind, shape)
    d = math.prod(shape)
    # the full matrix U, from the images of the unit vectors: U Uᵀ = I
    u = basis(torch.eye(d, dtype=torch.float64).reshape(d, *shape)).reshape(d, d)
    torch.testing.assert_close(u @ u.T, torch.eye(d, dtype=torch.float64), atol=1e-5, rtol=0)
    x = torch.randn(4, *shape)
    c = basis(x)
    assert c.shape == x.shape and c.dtype == torch.float32
    tol = round_trip_tol(basis, x)  # derived: (n + 1)·eps32·‖x‖ per transform
    torch.testing.assert_close(basis.inverse(c), x, atol=2 * tol, rtol=0)
    norm = c.double().flatten(1).norm(dim=1)  # the norms in float64: only c carries rounding
    torch.testing.assert_close(norm, x.double().flatten(1).norm(dim=1), atol=tol, rtol=0)


@pytest.mark.parametrize("shape", IMAGE_SHAPES)
def test_dct_matches_scipy(shape):
    x = torch.randn(3, *shape, dtype=torch.float64)
    expected = scipy.fft.dctn(x.numpy(), type=2, norm="ortho", axes=(-2, -1))
    np.testing.assert_allclose(DCT(data_shape=shape)(x).numpy(), expected, atol=1e-5)
    back = scipy.fft.idctn(expected, type=2, norm="ortho", axes=(-2, -1))
    np.testing.assert_allclose(
        DCT(data_shape=shape).inverse(torch.from_numpy(expected)), back, atol=1e-5
    )


def test_frequencies_squared_formula():
    dct, fourier = DCT(data_shape=(3, 8, 12)), Fourier(data_shape=(3, 8, 12))
    f64 = dict(dtype=torch.float64)
    i, j = torch.arange(8, **f64)[:, None], torch.arange(12, **f64)[None, :]
    lam = (math.pi * i / 8) ** 2 + (math.pi * j / 12) ** 2  # closed form in float64
    assert dct.frequencies_squared.shape == (1, 8, 12) and dct.frequencies_squared[0, 0, 0] == 0
    # the float32 buffer is the float64 value rounded once: relative error <= eps32 / 2
    torch.testing.assert_close(dct.frequencies_squared[0].double(), lam, rtol=EPS32, atol=0)
    # Fourier rows: frequencies 0, 1, 1, 2, 2, ..., N/2 — increasing, Nyquist last for even N
    k = torch.tensor([0, 1, 1, 2, 2, 3, 3, 4.0], **f64)
    torch.testing.assert_close(
        fourier.frequencies_squared[0, :, 0].double(),
        (2 * math.pi * k / 8) ** 2,
        rtol=EPS32,
        atol=0,
    )
    assert fourier.frequencies_squared[0, 0, 0] == 0


def laplacian_1d(n, periodic):
    lap = 2 * torch.eye(n, dtype=torch.float64) - torch.diag(torch.ones(n - 1), 1).double()
    lap -= torch.diag(torch.ones(n - 1), -1).double()
    if periodic:
        lap[0, -1] = lap[-1, 0] = -1
    else:  # Neumann: reflecting ends
        lap[0, 0] = lap[-1, -1] = 1
    return lap


@pytest.mark.parametrize("basis,periodic", [(DCT, False), (Fourier, True)])
@pytest.mark.parametrize("n", [7, 8])
def test_basis_diagonalises_its_laplacian(basis, periodic, n):
    """DCT-II rows are the Neumann Laplacian's eigenvectors, real Fourier rows the periodic one's,
    with eigenvalue 4 sin²(ω/2) ≈ ω², the continuous λ that `frequencies_squared` holds."""
    m, omega = basis.basis_1d(n)
    eig = m @ laplacian_1d(n, periodic) @ m.T
    torch.testing.assert_close(eig, torch.diag(4 * torch.sin(omega / 2) ** 2), atol=1e-10, rtol=0)
    assert torch.all(omega[1:] >= omega[:-1])


def test_fourier_matches_rfft():
    n = 9
    x = torch.randn(n, dtype=torch.float64)
    c = Fourier.basis_1d(n)[0] @ x
    f = torch.fft.rfft(x, norm="ortho")
    torch.testing.assert_close(c[0], f[0].real)
    torch.testing.assert_close(c[1::2], math.sqrt(2) * f[1:].real)
    torch.testing.assert_close(c[2::2], -math.sqrt(2) * f[1:].imag)


def blur(basis, x, sigma_b):
    alpha = torch.exp(-basis.frequencies_squared.to(x.dtype) * sigma_b**2 / 2)
    return basis.inverse(alpha * basis(x))


def test_heat_semigroup_and_mean_preservation():
    """Compared in float64: only the float32 matrix buffers round (UᵀU = I to ~1e-7), the same
    on every CPU; a wrong α or a damped DC coefficient is off by O(0.1)."""
    basis = DCT(data_shape=(3, 16, 16))
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    twice = blur(basis, blur(basis, x, 1.5), 2.0)
    torch.testing.assert_close(twice, blur(basis, x, 2.5), atol=1e-5, rtol=1e-5)
    y = blur(basis, x, 3.0)
    torch.testing.assert_close(y.mean((-2, -1)), x.mean((-2, -1)), atol=1e-6, rtol=0)
    torch.testing.assert_close(basis(y)[..., 0, 0], basis(x)[..., 0, 0], atol=1e-5, rtol=0)
    assert y.std() < x.std()


def test_pca_recovers_known_covariance():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64, generator=g))
    eigenvalues = torch.tensor([4.0, 1.0, 0.25, 0.04], dtype=torch.float64)
    x = (torch.randn(20000, 4, dtype=torch.float64, generator=g) * eigenvalues.sqrt()) @ q.T + 0.3
    stats = compute_dataset_statistics(TensorDataset(x.float(), torch.zeros(len(x))))
    torch.testing.assert_close(stats.pca_variance.double(), eigenvalues, rtol=0.05, atol=0)
    cosines = (stats.pca_components.double().T @ q).abs()  # matched directions: |cos| ≈ 1
    torch.testing.assert_close(
        cosines.diagonal(), torch.ones(4, dtype=torch.float64), atol=1e-2, rtol=0
    )
    basis = PCA().setup((4,), stats)
    assert basis.variance.shape == (4,)
    c = basis(x.float() - x.float().mean(0))
    torch.testing.assert_close(c.var(0, correction=0), stats.pca_variance, rtol=1e-3, atol=0)


def test_pca_sign_convention_and_buffers():
    basis = pca_basis((1, 4, 4))
    v = basis.components
    assert torch.all(v.gather(0, v.abs().argmax(0, keepdim=True)) > 0)
    assert basis.variance.shape == (1, 4, 4)
    assert torch.all(basis.variance.flatten()[:-1] >= basis.variance.flatten()[1:])
    assert set(basis.state_dict()) == {"components", "variance"}
    other = pca_basis((1, 4, 4), seed=1)  # a checkpoint restores the basis it was trained with
    other.load_state_dict(basis.state_dict())
    assert torch.equal(other.components, basis.components)


def test_missing_setup_or_statistics_is_a_clear_error():
    no_pca = compute_dataset_statistics(TensorDataset(torch.randn(8, 2), torch.zeros(8)), pca=False)
    with pytest.raises(ValueError, match="pca=True"):
        PCA().setup((2,), no_pca)
    with pytest.raises(RuntimeError, match="not set up"):
        PCA().setup((2,), None)(torch.zeros(1, 2))  # None: left for a checkpoint to fill
    with pytest.raises(RuntimeError, match="not set up"):
        DCT()(torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="needs images"):
        Fourier().setup((2,))


def test_lazy_setup_and_state_dict():
    lazy = DCT()
    assert lazy.matrix_h is None and len(lazy.state_dict()) == 0
    lazy.setup((1, 8, 12))
    assert set(lazy.state_dict()) == {"matrix_h", "matrix_w", "frequencies_squared"}
    assert lazy.matrix_h.shape == (8, 8) and lazy.matrix_w.shape == (12, 12)


@pytest.mark.parametrize("kind", ["identity", "dct", "fourier", "pca"])
def test_fp32_math_inside_disabled_autocast(kind):
    basis = make_basis(kind, (1, 8, 8))
    x = torch.randn(2, 1, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with torch.autocast("cpu", enabled=False):
            c = basis(x)
            back = basis.inverse(c)
    assert c.dtype == back.dtype == torch.float32
    # derived: two float32 transforms, (n + 1)·eps32·‖x‖ each
    torch.testing.assert_close(back, x, atol=2 * round_trip_tol(basis, x), rtol=0)
