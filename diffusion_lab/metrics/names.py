"""The metric names, in one place: what `evaluation.metrics` accepts and how result keys begin.

    quality     fid, kid, is   scored on generated samples (torch-fidelity; metrics/fidelity.py)
    likelihood  nll, vlb       bits/dim of held-out images (metrics/likelihood.py, metrics/vlb.py)

Result keys name the metric, then what it was measured with: `fid_digits_2k`, `kid_inception_50k`
(+ `_std`), `bpd_180` (nll), `vlb_bpd_180`; the real-data floor prefixes `real_`.
"""

QUALITY = ("fid", "kid", "is")
LIKELIHOOD = ("nll", "vlb")
METRICS = (*QUALITY, *LIKELIHOOD)
KEY_PREFIX = {"fid": "fid_", "kid": "kid_", "is": "is_", "nll": "bpd_", "vlb": "vlb_bpd_"}


def check_metrics(metrics) -> list[str]:
    """`metrics` as a list if every name is known; else a ValueError listing the choices."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"evaluation.metrics: unknown {unknown}; choose from {list(METRICS)}")
    return list(metrics)


def metric_of(key: str) -> str | None:
    """The metric a result key reports (`fid_digits_2k` -> fid, `bpd_180` -> nll), or None."""
    for metric in ("vlb", *QUALITY, "nll"):  # vlb_bpd_ before bpd_
        if key.startswith(KEY_PREFIX[metric]):
            return metric
    return None


def is_quality_key(key: str) -> bool:
    """True for FID/KID/IS result keys (their `_std` companions included)."""
    return metric_of(key) in QUALITY
