"""Cross-attention from image features to a sequence of conditioning embeddings (Rombach et al.
2022, "High-Resolution Image Synthesis with Latent Diffusion Models", §3.3: Attention(Q, K, V)
with Q from the features and K, V from the context).

Shapes: x (B, C, H, W), context (B, L, D_ctx), context_mask (B, L) bool (True = attend) or None
-> (B, C, H, W). The output projection is zero-initialised, so a new block is the identity.
"""

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


class CrossAttention(nn.Module):
    def __init__(self, channels: int, context_dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(1, channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor, context: Tensor, context_mask: Tensor | None = None) -> Tensor:
        height = x.shape[2]
        q = rearrange(self.q(self.norm(x)), "b (n d) h w -> b n (h w) d", n=self.heads)
        k, v = rearrange(self.kv(context), "b l (two n d) -> two b n l d", two=2, n=self.heads)
        mask = None if context_mask is None else context_mask[:, None, None, :]
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return x + self.proj(rearrange(h, "b n (h w) d -> b (n d) h w", h=height))


class TokenCrossAttention(nn.Module):
    """The same attention for token sequences (DiT): x (B, N, D) attends to context (B, L, D_ctx);
    pre-LayerNorm, zero-initialised output, residual added by the caller."""

    def __init__(self, hidden: int, context_dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(hidden, eps=1e-6)
        self.q = nn.Linear(hidden, hidden)
        self.kv = nn.Linear(context_dim, 2 * hidden)
        self.proj = nn.Linear(hidden, hidden)

    def zero_init(self) -> None:
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor, context: Tensor, context_mask: Tensor | None = None) -> Tensor:
        q = rearrange(self.q(self.norm(x)), "b l (n d) -> b n l d", n=self.heads)
        k, v = rearrange(self.kv(context), "b l (two n d) -> two b n l d", two=2, n=self.heads)
        mask = None if context_mask is None else context_mask[:, None, None, :]
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(rearrange(h, "b n l d -> b l (n d)"))
