"""Image encoder: DINOv2 (transformers ``Dinov2Model``) with ImageNet normalisation in-graph."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import Dinov2Config, Dinov2Model

from .dino_legacy import LegacyDinov2Model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DinoEncoder(nn.Module):
    """Maps images in [0, 1] to DINOv2 tokens (CLS + patches, after the final LayerNorm).

    Built from a ``Dinov2Config`` dict, or loaded from ``pretrained_path`` (local dir or hub id that
    the user configured; nothing is downloaded implicitly by this project).
    """

    def __init__(self, dino_config: dict[str, Any], pretrained_path: str | None = None, freeze: bool = False):
        super().__init__()
        if pretrained_path:
            self.dino = load_pretrained_dino(pretrained_path)
        else:
            self.dino = LegacyDinov2Model(Dinov2Config(**dino_config))
        if freeze:
            self.dino.requires_grad_(False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image [N, 3, H, W] in [0, 1] -> tokens [N, 1 + (H//p)*(W//p), D]."""
        assert image.dim() == 4 and image.shape[1] == 3, f"expected [N, 3, H, W], got {tuple(image.shape)}"
        mean = torch.tensor(IMAGENET_MEAN, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
        pixels = (image - mean) / std
        return self.dino(pixel_values=pixels).last_hidden_state


def load_pretrained_dino(path: str) -> LegacyDinov2Model:
    """Load DINOv2 weights through the stock ``Dinov2Model`` (which applies transformers' own
    checkpoint-name conversions, e.g. 4.x attention names) and move them into our subclass.

    Raises ValueError when the checkpoint leaves any parameter uninitialised.
    """
    stock, info = Dinov2Model.from_pretrained(path, output_loading_info=True)
    missing = sorted(info.get("missing_keys", []))
    if missing:
        raise ValueError(f"DINOv2 checkpoint {path} lacks {len(missing)} parameters, e.g. {missing[:4]}")
    with torch.device("meta"):
        legacy = LegacyDinov2Model(stock.config)
    legacy.load_state_dict(stock.state_dict(), strict=True, assign=True)
    return legacy
