"""Sample-quality metrics (FID/IS/KID via torch-fidelity), NLL bits/dim, feature extractors."""

from diffusion_lab.metrics.classifier import DomainClassifier, train_or_load_classifier
from diffusion_lab.metrics.features import InceptionWeightsUnavailable, inception_weights_path
from diffusion_lab.metrics.fidelity import (
    evaluate_sample_quality,
    fidelity_metrics,
    format_count,
    metric_key,
    sample_quality,
)
from diffusion_lab.metrics.likelihood import (
    Likelihood,
    bits_per_dim,
    default_t_min,
    uniform_dequantize,
)
from diffusion_lab.metrics.vlb import VariationalBound, ddpm_vlb_bits_per_dim

__all__ = [
    "Likelihood",
    "VariationalBound",
    "bits_per_dim",
    "ddpm_vlb_bits_per_dim",
    "default_t_min",
    "uniform_dequantize",
    "DomainClassifier",
    "InceptionWeightsUnavailable",
    "evaluate_sample_quality",
    "fidelity_metrics",
    "format_count",
    "inception_weights_path",
    "metric_key",
    "sample_quality",
    "train_or_load_classifier",
]
