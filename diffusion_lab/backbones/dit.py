"""Diffusion Transformer, DiT (Peebles & Xie 2023, "Scalable Diffusion Models with Transformers").

Shapes: x (B, C, H, W), noise_cond (B,) float, cond (B,) long or None -> (B, C_out, H, W); inside,
tokens are (B, N, D) with N = (H/p)(W/p) patches of side p = `patch_size` and D = `hidden_size`.

- Patchify (§3.2 "Patchify", Fig. 4): a p×p convolution with stride p turns x into N tokens of
  width D, plus the fixed (not learned) 2-D sin-cos positional embedding of ViT/MAE: the first D/2
  channels encode the patch row, the last D/2 its column, each as [sin(pos·ω_k), cos(pos·ω_k)],
  ω_k = 10000^(-k/(D/4)), k < D/4.
- Conditioning (§3.2 "DiT block design"): the noise level and class label become one vector c
  (`NoiseEmbedding`: Fourier features of noise_cond through a SiLU MLP, plus the label embedding;
  index num_classes is the null label used by classifier-free guidance, and cond=None on a
  conditional model means the null label). NoiseEmbedding already returns SiLU(c), so each
  modulation below is the paper's SiLU→Linear with the SiLU applied once, shared.
- `depth` DiT blocks with adaLN-Zero (§3.2, Fig. 3): LayerNorm without affine parameters,
  modulated by (shift β, scale γ, gate α) regressed from c, one triple per branch:
      x ← x + α₁ · Attn(LN(x)(1 + γ₁) + β₁),   x ← x + α₂ · MLP(LN(x)(1 + γ₂) + β₂),
  multi-head self-attention through `scaled_dot_product_attention`, MLP D → mlp_ratio·D → D
  with tanh-approximated GELU. The modulation Linear layers start at zero, so every block starts
  as the identity ("adaLN-Zero").
- Final layer (§3.2 "Transformer decoder"): adaLN (shift, scale) + LayerNorm + Linear to
  p·p·C_out per token, zero-initialised (as in the paper's code), so the network outputs exactly
  0 at initialisation; then unpatchify back to (B, C_out, H, W).

Sizes S, B, L, XL: Table 1 (configs/backbone/dit_s.yaml, dit_b.yaml). The paper's remaining choices
are kept: xavier-uniform init of the Linear layers and the patch projection, N(0, 0.02²) init of
the embedding MLP and label table. Dropout (not used in the paper, useful on small data) acts on
the attention weights and the MLP's hidden activations.
"""

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from diffusion_lab.backbones.cross_attention import TokenCrossAttention
from diffusion_lab.backbones.embedding import NoiseEmbedding

FREQUENCY_FEATURES = 256  # Fourier features of the noise level (the paper's frequency size)


def sincos_pos_embed(dim: int, grid_h: int, grid_w: int) -> Tensor:
    """Fixed 2-D sin-cos positional embedding (grid_h·grid_w, dim), rows in raster order."""
    if dim % 4:
        raise ValueError(f"the 2-D sin-cos positional embedding needs dim % 4 == 0, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))

    def axis(pos: Tensor) -> Tensor:
        phase = torch.outer(pos.to(torch.float64), omega)
        return torch.cat([phase.sin(), phase.cos()], dim=1)

    rows, cols = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    return torch.cat([axis(rows.flatten()), axis(cols.flatten())], dim=1).float()


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """LN(x)(1 + γ) + β with (B, D) shift and scale broadcast over the N tokens."""
    return torch.addcmul(shift.unsqueeze(1), x, scale.unsqueeze(1) + 1)


class Attention(nn.Module):
    """Multi-head self-attention over the N tokens."""

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        p = self.dropout if self.training else 0.0
        h = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        return self.proj(rearrange(h, "b h n d -> b n (h d)"))


class DiTBlock(nn.Module):
    """x + α₁·Attn(modulate(LN x)) then x + α₂·MLP(modulate(LN x)); (β, γ, α) ×2 from c."""

    def __init__(
        self,
        hidden: int,
        heads: int,
        mlp_ratio: float,
        emb_dim: int,
        dropout: float,
        context_dim: int | None = None,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden, heads, dropout)
        # optional cross-attention to a context sequence, between self-attention and MLP
        self.cross = TokenCrossAttention(hidden, context_dim, heads) if context_dim else None
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        width = int(hidden * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(hidden, width),
            nn.GELU(approximate="tanh"),
            nn.Dropout(dropout),
            nn.Linear(width, hidden),
        )
        self.modulation = nn.Linear(emb_dim, 6 * hidden)  # adaLN-Zero: zeroed by DiT.__init__

    def forward(self, x: Tensor, emb: Tensor, context=None, context_mask=None) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(emb).chunk(6, dim=1)
        x = x + gate1.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift1, scale1))
        if self.cross is not None and context is not None:
            x = x + self.cross(x, context, context_mask)
        return x + gate2.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift2, scale2))


class FinalLayer(nn.Module):
    """adaLN (shift, scale) + LayerNorm, then Linear D → p·p·C_out per token."""

    def __init__(self, hidden: int, emb_dim: int, patch_values: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Linear(emb_dim, 2 * hidden)
        self.linear = nn.Linear(hidden, patch_values)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        shift, scale = self.modulation(emb).chunk(2, dim=1)
        return self.linear(modulate(self.norm(x), shift, scale))


def _divisors(n: int, limit: int = 8) -> list[int]:
    return [d for d in range(1, min(n, limit) + 1) if n % d == 0]


class DiT(nn.Module):
    """Diffusion Transformer: patchify, `depth` adaLN-Zero blocks, final layer, unpatchify."""

    data_ndim = 3  # the builder checks this against the dataset's sample shape

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int | None = None,
        image_size: int = 16,
        patch_size: int = 2,
        hidden_size: int = 96,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        num_classes: int | None = None,
        emb_dim: int | None = None,
        context_dim: int | None = None,
    ):
        super().__init__()
        self.context_dim = context_dim
        for key, value in (("patch_size", patch_size), ("depth", depth), ("num_heads", num_heads)):
            if value < 1:
                raise ValueError(f"backbone.{key}={value} must be an integer >= 1")
        if image_size % patch_size:
            raise ValueError(
                f"backbone.image_size={image_size} must be divisible by backbone.patch_size="
                f"{patch_size}; use a patch_size that divides it (e.g. "
                f"{', '.join(map(str, _divisors(image_size)))}) or an image_size that is a "
                f"multiple of {patch_size} (e.g. {math.ceil(image_size / patch_size) * patch_size})"
            )
        step = math.lcm(4, num_heads)  # whole heads, and 4 | D for the 2-D sin-cos embedding
        if hidden_size % step:
            nearest = max(step, round(hidden_size / step) * step)
            heads = [h for h in range(1, 33) if hidden_size % h == 0]
            raise ValueError(
                f"backbone.hidden_size={hidden_size} must be divisible by backbone.num_heads="
                f"{num_heads} (whole heads) and by 4 (2-D sin-cos positional embedding); use "
                f"hidden_size={nearest}"
                + (f", or num_heads in {heads}" if hidden_size % 4 == 0 else "")
            )
        self.in_channels = in_channels
        self.out_channels = out_channels or in_channels
        self.patch_size = self.downsampling_factor = patch_size
        self.hidden_size = hidden_size
        emb_dim = emb_dim or hidden_size
        self.embedding = NoiseEmbedding(emb_dim, FREQUENCY_FEATURES, num_classes)
        self.patchify = nn.Conv2d(in_channels, hidden_size, patch_size, stride=patch_size)
        self.grid = image_size // patch_size
        self.register_buffer(  # fixed, recomputed on load: not a parameter, not in checkpoints
            "pos_embed", sincos_pos_embed(hidden_size, self.grid, self.grid), persistent=False
        )
        self.blocks = nn.ModuleList(
            DiTBlock(hidden_size, num_heads, mlp_ratio, emb_dim, dropout, context_dim)
            for _ in range(depth)
        )
        self.final = FinalLayer(hidden_size, emb_dim, patch_size**2 * self.out_channels)
        self._init_weights()

    @property
    def num_classes(self) -> int | None:
        return self.embedding.num_classes

    def _init_weights(self) -> None:
        """As the paper's code: xavier Linear and patch conv, N(0, 0.02²) embeddings, adaLN-Zero."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.xavier_uniform_(self.patchify.weight.view(self.hidden_size, -1))
        nn.init.zeros_(self.patchify.bias)
        for layer in (self.embedding.mlp[0], self.embedding.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
        if self.embedding.label is not None:
            nn.init.normal_(self.embedding.label.weight, std=0.02)
        for layer in [b.modulation for b in self.blocks] + [
            self.final.modulation,
            self.final.linear,
        ]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        for block in self.blocks:
            if block.cross is not None:
                block.cross.zero_init()

    def forward(
        self,
        x: Tensor,
        noise_cond: Tensor,
        cond: Tensor | None = None,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
    ) -> Tensor:
        """`context` (B, L, context_dim) feeds the cross-attention layers; None skips them."""
        height, width = x.shape[-2:]
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(
                f"DiT input of spatial size {(height, width)} is not divisible by its "
                f"patch_size {p}"
            )
        grid_h, grid_w = height // p, width // p
        pos = self.pos_embed
        if (grid_h, grid_w) != (self.grid, self.grid):  # not image_size: same formula, this grid
            pos = sincos_pos_embed(self.hidden_size, grid_h, grid_w).to(x.device)
        emb = self.embedding(noise_cond, cond)
        h = rearrange(self.patchify(x), "b d h w -> b (h w) d") + pos
        for block in self.blocks:
            h = block(h, emb, context, context_mask)
        h = self.final(h, emb)
        return rearrange(h, "b (h w) (p q c) -> b c (h p) (w q)", h=grid_h, w=grid_w, p=p, q=p)
