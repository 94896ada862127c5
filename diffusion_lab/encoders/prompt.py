"""PromptEncoder: a small character-level Transformer over a text prompt per class.

Each label gets the prompt `template.format(name)` (names default to the label's digits); the
null label gets the empty prompt. Characters are embedded, position-encoded and passed through a
`depth`-layer Transformer encoder, randomly initialised and trained with the diffusion model
(`trainable=false` freezes it). It stands in for a pretrained text encoder where none can be
downloaded, and is what the tests use.

Shapes: labels (B,) long -> context (B, L, dim), mask (B, L) bool (True = a real token).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class PromptEncoder(nn.Module):
    def __init__(
        self,
        num_classes: int,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        template: str = "{name}",
        class_names: list[str] | None = None,
        trainable: bool = True,
    ):
        super().__init__()
        names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        if len(names) != num_classes:
            raise ValueError(
                f"encoder.class_names has {len(names)} names for num_classes={num_classes}"
            )
        prompts = [template.format(name=n) for n in names] + [""]  # last: the null label
        vocab = sorted({c for p in prompts for c in p})
        self.num_classes, self.dim = num_classes, dim
        length = 1 + max(len(p) for p in prompts)  # a leading start token so no row is empty
        tokens = torch.zeros(len(prompts), length, dtype=torch.long)  # 0 = padding
        for row, prompt in enumerate(prompts):
            ids = [1] + [2 + vocab.index(c) for c in prompt]  # 1 = start
            tokens[row, : len(ids)] = torch.tensor(ids)
        self.register_buffer("tokens", tokens, persistent=False)
        self.embed = nn.Embedding(2 + len(vocab), dim, padding_idx=0)
        self.position = nn.Parameter(torch.randn(length, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True)
        self.transformer = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.requires_grad_(trainable)

    def forward(self, labels: Tensor) -> tuple[Tensor, Tensor]:
        tokens = self.tokens[labels]
        mask = tokens != 0
        h = self.embed(tokens) + self.position
        h = self.transformer(h, src_key_padding_mask=~mask)
        return self.norm(h), mask
