"""FID/KID/IS through torch-fidelity: the Fréchet closed form on Gaussian features, FID(X, X) = 0,
unbiased KID, the Inception path on random weights, the offline error, the domain classifier
(accuracy, on-disk cache) and the metric keys."""

import math
import time
import urllib.error

import numpy as np
import pytest
import scipy.linalg
import torch
import torch_fidelity.feature_extractor_inceptionv3 as tf_inception
from torch.utils.data import TensorDataset
from torch_fidelity import FeatureExtractorBase, register_feature_extractor
from torch_fidelity.metric_kid import kernel_poly, mmd2
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from diffusion_lab.data import DigitsDataModule
from diffusion_lab.metrics import (
    InceptionWeightsUnavailable,
    evaluate_sample_quality,
    fidelity_metrics,
    format_count,
    inception_weights_path,
    metric_key,
    sample_quality,
    train_or_load_classifier,
)
from diffusion_lab.metrics import classifier as classifier_module

IDENTITY = "test-identity"
MIN_ACCURACY = 0.95  # measured: 0.983 (seed 0, 14 epochs); 0.97-0.98 over seeds 0-1, 10-14 epochs


class IdentityExtractor(FeatureExtractorBase):
    """Features = the inputs (B, D), in float64: the metrics of the data themselves."""

    def __init__(self, name, features_list, **kwargs):
        super().__init__(name, features_list)

    def forward(self, x):
        return (x.double(),)

    @staticmethod
    def get_provided_features_list():
        return ("x",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return "x"

    @staticmethod
    def can_be_compiled():
        return False


if IDENTITY not in FEATURE_EXTRACTORS_REGISTRY:
    register_feature_extractor(IDENTITY, IdentityExtractor)


pytestmark = pytest.mark.usefixtures("one_thread")


def frechet(mu1, s1, mu2, s2) -> float:
    """‖μ1−μ2‖² + Tr(S1 + S2 − 2(S1 S2)^½), the square root by scipy (independent of the code)."""
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def identity_metrics(x, y, **kw):
    return fidelity_metrics(
        torch.as_tensor(x), torch.as_tensor(y), feature_extractor=IDENTITY, cuda=False, **kw
    )


@pytest.mark.parametrize(
    "n, text", [(50_000, "50k"), (10_000, "10k"), (2000, "2k"), (500, "500"), (2500, "2500")]
)
def test_format_count(n, text):
    assert format_count(n) == text


def test_metric_keys():
    assert metric_key("fid", "inception", 50_000) == "fid_inception_50k"
    assert metric_key("kid", "digits", 2000) == "kid_digits_2k"
    assert metric_key("is", "inception", 10_000) == "is_inception_10k"


def gaussians(n: int, seed: int = 0):
    """Two 4-d Gaussians with known means and full covariances, n samples of each."""
    rng = np.random.default_rng(seed)
    d = 4
    mu1, mu2 = np.zeros(d), np.array([1.0, -0.5, 0.25, 0.0])
    a1, a2 = rng.normal(size=(d, d)) / 2, rng.normal(size=(d, d)) / 2
    s1, s2 = a1 @ a1.T + 0.1 * np.eye(d), a2 @ a2.T + 0.1 * np.eye(d)
    x, y = rng.multivariate_normal(mu1, s1, n), rng.multivariate_normal(mu2, s2, n)
    return x, y, (mu1, s1, mu2, s2)


def test_fid_is_the_frechet_distance_of_the_empirical_moments():
    x, y, _ = gaussians(4000)
    fid = identity_metrics(x, y, metrics=("fid",))["fid"]
    expected = frechet(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    assert fid == pytest.approx(expected, rel=1e-9)


def test_fid_matches_the_closed_form_of_the_population():
    # std of the estimate at n=4000 per set, measured over 300 draws: 0.047 (bias 7e-4);
    # tolerance 0.25 is about 5 std
    x, y, population = gaussians(4000)
    fid = identity_metrics(x, y, metrics=("fid",))["fid"]
    assert fid == pytest.approx(frechet(*population), abs=0.25)


def test_fid_of_a_set_against_itself_is_zero():
    x, _, _ = gaussians(1000)
    fid = identity_metrics(x, x, metrics=("fid",))["fid"]
    assert abs(fid) < 1e-9 * np.trace(np.cov(x, rowvar=False))


def test_kid_is_unbiased_on_equal_distributions():
    """Independent X, Y ~ N(0, I): the mean of R independent KIDs is 0 within 3 standard errors,
    while the biased MMD² of the same draws is positive by more than 3 standard errors."""
    n, d, repeats = 100, 8, 40
    rng = np.random.default_rng(0)
    kids, biased = [], []
    for r in range(repeats):
        x, y = rng.normal(size=(n, d)), rng.normal(size=(n, d))
        m = identity_metrics(x, y, metrics=("kid",), kid_subsets=1, kid_subset_size=n, seed=r)
        kids.append(m["kid"])
        k_xx, k_xy, k_yy = kernel_poly(x, x), kernel_poly(x, y), kernel_poly(y, y)  # cubic
        biased.append(mmd2(k_xx, k_xy, k_yy, mmd_est="biased"))
    kids, biased = np.array(kids), np.array(biased)
    assert abs(kids.mean()) < 3 * kids.std(ddof=1) / math.sqrt(repeats)
    assert biased.mean() > 3 * biased.std(ddof=1) / math.sqrt(repeats)


def random_inception_weights(path) -> None:
    """torch-fidelity's Inception-v3 architecture, randomly initialised, saved as its weights file.

    BatchNorm scales of 2.5 offset the variance lost per conv+ReLU layer, so the features of
    different images differ instead of vanishing."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tf_inception, "load_state_dict_from_url", lambda *a, **k: None)
        mp.setattr(tf_inception.FeatureExtractorInceptionV3, "load_state_dict", lambda *a: None)
        torch.manual_seed(0)
        net = tf_inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.fill_(2.5)
    torch.save(net.state_dict(), path)


def test_inception_path_runs_on_a_local_weights_file(tmp_path):
    weights = tmp_path / "inception.pth"
    random_inception_weights(weights)
    g = torch.Generator().manual_seed(0)
    samples = torch.rand(6, 1, 16, 16, generator=g) * 2 - 1  # grayscale: repeated to RGB
    reference = TensorDataset(torch.rand(8, 1, 16, 16, generator=g) * 2 - 1, torch.zeros(8))
    cache = tmp_path / "cache"
    out = sample_quality(
        samples,
        reference,
        extractor="inception",
        inception_weights=weights,
        cache_dir=cache,
        cache_name="digits-test",
        cuda=False,
    )
    keys = {"fid_inception_6", "kid_inception_6", "is_inception_6"}
    assert set(out) == keys | {"kid_inception_6_std", "is_inception_6_std"}
    assert all(math.isfinite(v) for v in out.values())
    assert out["fid_inception_6"] > 0
    cached = sorted(p.name for p in cache.iterdir())
    assert cached and all(p.startswith("digits-test-inception-") for p in cached)


def test_offline_without_weights_says_what_to_do(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    x = torch.zeros(4, 1, 16, 16)
    with pytest.raises(InceptionWeightsUnavailable) as err:
        sample_quality(x, x, extractor="inception", cuda=False)
    message = str(err.value)
    for part in (
        tf_inception.URL_INCEPTION_V3,
        "pt_inception-2015-12-05",
        "inception_weights=",
        str(tmp_path / "checkpoints"),
        "extractor=domain",
        "offline",
    ):
        assert part in message
    with pytest.raises(FileNotFoundError, match="inception_weights=.*is not a file"):
        inception_weights_path(tmp_path / "missing.pth")


def test_weights_are_downloaded_once_into_the_hub_cache(tmp_path, monkeypatch):
    calls = []

    def download(url, dst, **kwargs):
        calls.append(url)
        with open(dst, "wb") as f:
            f.write(b"weights")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    first, second = inception_weights_path(), inception_weights_path()
    assert first == second and first.startswith(str(tmp_path / "checkpoints"))
    assert calls == [tf_inception.URL_INCEPTION_V3]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Digits 16x16, its classifier trained once into a module-wide cache dir."""
    dm = DigitsDataModule()
    cache = tmp_path_factory.mktemp("cache")
    start = time.perf_counter()
    model, accuracy = train_or_load_classifier(dm, cache, verbose=False)
    return dm, cache, model, accuracy, time.perf_counter() - start


def images(dataset) -> torch.Tensor:
    return torch.stack([dataset[i][0] for i in range(len(dataset))])


def test_domain_classifier_is_accurate(digits):
    _, _, model, accuracy, seconds = digits
    assert accuracy > MIN_ACCURACY
    assert model.name == "digits" and model.checkpoint_path.is_file()


def test_domain_classifier_is_cached(digits, monkeypatch):
    dm, cache, model, accuracy, _ = digits
    mtime = model.checkpoint_path.stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("the cached classifier was retrained")

    monkeypatch.setattr(classifier_module, "_train", no_training)
    again, accuracy_again = train_or_load_classifier(DigitsDataModule(), cache, verbose=False)
    assert accuracy_again == accuracy
    assert again.checkpoint_path == model.checkpoint_path
    assert model.checkpoint_path.stat().st_mtime_ns == mtime
    for key, value in model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[key], value, rtol=0, atol=0)


def test_domain_metrics_rank_real_above_noise(digits):
    dm, cache, *_ = digits
    dm.setup("fit")
    real = images(dm.test_set)  # 180 held-out digits
    noise = torch.rand(real.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    good = evaluate_sample_quality(real, dm, cache, extractor="domain", cuda=False)
    bad = evaluate_sample_quality(noise, dm, cache, extractor="domain", cuda=False)
    n = len(real)
    assert set(good) == {
        f"{m}_digits_{n}{s}" for m, s in [("fid", ""), ("kid", ""), ("kid", "_std")]
    } | {f"is_digits_{n}", f"is_digits_{n}_std"}
    assert good[f"fid_digits_{n}"] < 0.1 * bad[f"fid_digits_{n}"]
    assert good[f"kid_digits_{n}"] < 0.1 * bad[f"kid_digits_{n}"]
    assert good[f"is_digits_{n}"] > 5 > bad[f"is_digits_{n}"]
    assert any(p.name.endswith("stat-fid-features.pt") for p in (cache / "fidelity").iterdir())


def test_domain_fid_of_the_training_split_against_itself_is_zero(digits):
    dm, _, model, *_ = digits
    dm.setup("fit")
    out = sample_quality(
        images(dm.train_set), dm.train_set, extractor="domain", classifier=model, metrics=("fid",)
    )
    assert abs(out[f"fid_digits_{len(dm.train_set)}"]) < 1e-6


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(extractor="clip"), "extractor='clip'"),
        (dict(extractor="domain"), "needs classifier="),
        (dict(extractor="domain", num_samples=5), "num_samples=5"),
        (dict(extractor="domain", metrics=("prc",)), "metrics="),
    ],
)
def test_errors_are_actionable(kwargs, error):
    x = torch.zeros(4, 1, 16, 16)
    with pytest.raises(ValueError, match=error):
        sample_quality(x, x, **kwargs)


def test_resolution_mismatch_is_reported():
    with pytest.raises(ValueError, match="generate at the dataset's resolution"):
        sample_quality(torch.zeros(4, 1, 8, 8), torch.zeros(4, 1, 16, 16), extractor="domain")
