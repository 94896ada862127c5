"""results.json: what a run leaves for people and scripts to compare (DESIGN §5)."""

from __future__ import annotations

import platform
from importlib import metadata

from diffusion_lab.io import write_json

__all__ = ["versions", "write_json"]

PACKAGES = (
    "torch",
    "torchvision",
    "pytorch-lightning",
    "hydra-core",
    "torchmetrics",
    "torch-fidelity",
    "diffusion_lab",
)


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
