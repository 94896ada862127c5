"""Feature extractors for torch-fidelity: Inception-v3 weights offline, the domain classifier.

FID (Heusel et al. 2017), KID (Bińkowski et al. 2018) and IS (Salimans et al. 2016) are computed
by torch-fidelity on the features of a registered extractor. Two are used here:

- `inception-v3-compat` (torch-fidelity's port of the TF pt_inception-2015-12-05 graph). Its
  weights come from `inception_weights_path`: a configured local file, else torch hub's cache,
  else a download; offline without weights the error says what to do.
- `domain-cnn` (`DomainFeatureExtractor`): the dataset's own `DomainClassifier`; penultimate
  activations for FID/KID, logits for IS. torch-fidelity hands it `feature_extractor_weights_path`,
  here the classifier's checkpoint file.

Images reach every extractor as torch-fidelity expects them: uint8 (B, C, H, W) in 0..255, with
3 channels for Inception (`to_uint8`).
"""

import hashlib
import http.client
import os
from pathlib import Path

import torch
from torch import Tensor
from torch_fidelity import FeatureExtractorBase, register_feature_extractor
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from diffusion_lab.metrics.classifier import DomainClassifier

INCEPTION = "inception-v3-compat"  # torch-fidelity's registry name
INCEPTION_FILE = URL_INCEPTION_V3.rsplit("/", 1)[-1]  # weights-inception-2015-12-05-6726825d.pth
DOMAIN = "domain-cnn"
# the config key that takes a local weights path
INCEPTION_WEIGHTS_KEY = "evaluation.inception_weights"


class InceptionWeightsUnavailable(RuntimeError):
    """The Inception-v3 weights are neither configured, cached nor downloadable."""


def to_uint8(x: Tensor, rgb: bool = False) -> Tensor:
    """Images in [-1, 1] -> uint8 in 0..255 (as a PNG would store them); rgb: 1 -> 3 channels."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    if rgb and x.shape[-3] == 1:
        x = x.expand(*x.shape[:-3], 3, *x.shape[-2:])
    if rgb and x.shape[-3] != 3:
        raise ValueError(f"Inception needs 1- or 3-channel images; got shape {tuple(x.shape)}")
    return x.contiguous()


def _offline_message(url: str, dst: Path, error: BaseException) -> str:
    return (
        f"could not download the Inception-v3 weights for FID/IS/KID from {url} ({error!r}); this "
        "machine seems to be offline. Either\n"
        f"  1. download that file (torch-fidelity's conversion of the TF pt_inception-2015-12-05 "
        f"weights) on a machine with a network and set {INCEPTION_WEIGHTS_KEY}=/path/to/"
        f"{INCEPTION_FILE} (or copy it to {dst}, torch hub's cache, where it is found "
        "automatically), or\n"
        "  2. use the domain feature extractor (evaluation.extractor=domain): a small classifier trained on the "
        "dataset itself, offline; its metric keys name the dataset (fid_digits_2k), not Inception."
    )


def inception_weights_path(inception_weights: str | os.PathLike | None = None) -> str:
    """A local file with the Inception-v3 weights: the configured path, or torch hub's copy.

    With no path configured the weights are looked up in `<torch hub dir>/checkpoints` (where
    torch-fidelity itself keeps them) and downloaded there when missing. A failed download raises
    `InceptionWeightsUnavailable` with the ways out.
    """
    if inception_weights is not None:
        path = Path(inception_weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"{INCEPTION_WEIGHTS_KEY}={inception_weights} is not a file: point it to the "
                f"Inception-v3 weights {INCEPTION_FILE} (download: {URL_INCEPTION_V3})"
                ", or set it to null to download them, or use the domain feature extractor"
            )
        return str(path)
    dst = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    if not dst.is_file():
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(URL_INCEPTION_V3, str(dst), progress=False)
        except (OSError, http.client.HTTPException) as e:  # URLError, timeouts, DNS, resets
            raise InceptionWeightsUnavailable(_offline_message(URL_INCEPTION_V3, dst, e)) from e
    return str(dst)


_DIGESTS: dict[tuple, str] = {}


def file_digest(path: str | os.PathLike, n: int = 8) -> str:
    """First n hex digits of the file's SHA-256 (memoised by path, size and mtime)."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key][:n]


class DomainFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity extractor around a `DomainClassifier` checkpoint.

    Input uint8 (B, C, H, W) (or float in [-1, 1]) at the classifier's channels; features
    'features' (B, feature_dim) for FID/KID and 'logits' (B, num_classes) for IS.
    """

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise ValueError(
                f"the {DOMAIN} feature extractor needs its classifier: pass the checkpoint of "
                "diffusion_lab.metrics.train_or_load_classifier as feature_extractor_weights_path"
            )
        self.net, _ = DomainClassifier.load(feature_extractor_weights_path)
        self.in_channels = self.net.config["in_channels"]
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"the {self.net.name} classifier takes (B, {self.in_channels}, H, W) images; got "
                f"{tuple(x.shape)}"
            )
        x = x.float() / 127.5 - 1 if x.dtype == torch.uint8 else x.float()
        features, logits = self.net.features_and_logits(x)
        out = {"features": features, "logits": logits}
        return tuple(out[k].float() for k in self.features_list)

    @staticmethod
    def get_provided_features_list():
        return "features", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits", "fid": "features", "kid": "features", "prc": "features"}[metric]

    @staticmethod
    def can_be_compiled():
        return False


if DOMAIN not in FEATURE_EXTRACTORS_REGISTRY:  # registered once per process
    register_feature_extractor(DOMAIN, DomainFeatureExtractor)
