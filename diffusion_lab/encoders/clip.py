"""CLIPTextEncoder: a pretrained CLIP text transformer (Radford et al. 2021) on one prompt per
class, frozen; the null label gets the empty prompt. Needs the `transformers` package and the
weights in a local folder (e.g. `openai/clip-vit-base-patch32` saved with save_pretrained, or a
Hugging Face cache snapshot); nothing is downloaded at run time. Prompts are encoded once.

Shapes: labels (B,) long -> context (B, 77, hidden), mask (B, 77) bool.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn


class CLIPTextEncoder(nn.Module):
    def __init__(
        self,
        num_classes: int,
        weights_path: str,
        template: str = "a photo of the digit {name}",
        class_names: list[str] | None = None,
    ):
        super().__init__()
        try:
            from transformers import CLIPTextModel, CLIPTokenizer
        except ImportError:
            raise ValueError(
                "encoder=clip needs the `transformers` package: pip install transformers"
            ) from None
        if not weights_path or not Path(weights_path).is_dir():
            raise ValueError(
                f"encoder.weights_path={weights_path} is not a folder with CLIP weights: on a "
                'machine with a network run `python -c "from transformers import CLIPTextModel, '
                "CLIPTokenizer as T; [c.from_pretrained('openai/clip-vit-base-patch32')"
                ".save_pretrained('clip') for c in (CLIPTextModel, T)]\"` and copy ./clip here"
            )
        names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        prompts = [template.format(name=n) for n in names] + [""]
        tokenizer = CLIPTokenizer.from_pretrained(weights_path, local_files_only=True)
        model = CLIPTextModel.from_pretrained(weights_path, local_files_only=True).eval()
        batch = tokenizer(prompts, padding="max_length", return_tensors="pt")
        with torch.no_grad():
            context = model(**batch).last_hidden_state
        self.register_buffer("context", context)
        self.register_buffer("mask", batch["attention_mask"].bool())
        self.dim = context.shape[-1]

    def forward(self, labels: Tensor) -> tuple[Tensor, Tensor]:
        return self.context[labels], self.mask[labels]
