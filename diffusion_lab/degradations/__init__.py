"""Degradations: turn a schedule's level at t into per-component α(t), σ(t) in a basis."""

from diffusion_lab.degradations.gaussian import VarianceExploding, VariancePreserving

__all__ = ["VariancePreserving", "VarianceExploding"]
