"""Conditioning encoders: class labels → a sequence of embeddings for cross-attention.

Every encoder maps labels (B,) long, with index `num_classes` the null label (classifier-free
guidance and label dropout), to (context (B, L, dim), mask (B, L) bool, True = attend).
"""

from diffusion_lab.encoders.clip import CLIPTextEncoder
from diffusion_lab.encoders.prompt import PromptEncoder

__all__ = ["CLIPTextEncoder", "PromptEncoder"]
