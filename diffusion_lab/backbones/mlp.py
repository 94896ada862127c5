"""Residual MLP for flat vector data (2-D toy distributions), the vector analogue of the U-Net:
pre-LayerNorm residual blocks with the noise embedding added inside each block (as the time
embedding in Ho et al. 2020) and a zero-initialised output layer, so the output is exactly 0 at
initialisation. Knows nothing about diffusion.

Shapes: x (B, dim), noise_cond (B,) float, cond (B,) long or None -> (B, dim).
"""

import torch.nn.functional as F
from torch import Tensor, nn

from diffusion_lab.backbones.embedding import NoiseEmbedding


class MLPBlock(nn.Module):
    """x + W₂ SiLU(W₁ LayerNorm(x) + V emb)."""

    def __init__(self, hidden: int, emb_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.emb = nn.Linear(emb_dim, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        return x + self.fc2(F.silu(self.fc1(self.norm(x)) + self.emb(emb)))


class MLP(nn.Module):
    """Linear lift to `hidden`, `depth` residual blocks, LayerNorm→SiLU→zero-init Linear out."""

    data_ndim = 1  # the builder checks this against the dataset's sample shape

    def __init__(
        self,
        dim: int = 2,
        hidden: int = 256,
        depth: int = 4,
        num_classes: int | None = None,
        emb_dim: int = 128,
    ):
        super().__init__()
        self.embedding = NoiseEmbedding(emb_dim, num_classes=num_classes)
        self.fc_in = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(MLPBlock(hidden, emb_dim) for _ in range(depth))
        self.norm_out = nn.LayerNorm(hidden)
        self.fc_out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.fc_out.weight)
        nn.init.zeros_(self.fc_out.bias)

    def forward(self, x: Tensor, noise_cond: Tensor, cond: Tensor | None = None) -> Tensor:
        emb = self.embedding(noise_cond, cond)
        h = self.fc_in(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.fc_out(F.silu(self.norm_out(h)))
