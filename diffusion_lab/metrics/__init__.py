"""Sample-quality metrics (FID/IS/KID via torch-fidelity), NLL bits/dim, feature extractors.

The names below load on first use (PEP 562), so `diffusion_lab.metrics.names` (the registry of
metric names) imports without torch-fidelity and the extractors.
"""

import importlib

_EXPORTS = {
    "DomainClassifier": "classifier",
    "train_or_load_classifier": "classifier",
    "InceptionWeightsUnavailable": "features",
    "inception_weights_path": "features",
    "evaluate_sample_quality": "fidelity",
    "fidelity_metrics": "fidelity",
    "format_count": "fidelity",
    "metric_key": "fidelity",
    "sample_quality": "fidelity",
    "Likelihood": "likelihood",
    "bits_per_dim": "likelihood",
    "default_t_min": "likelihood",
    "uniform_dequantize": "likelihood",
    "VariationalBound": "vlb",
    "ddpm_vlb_bits_per_dim": "vlb",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
