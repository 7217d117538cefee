"""DINOv2 with the position-embedding resize of transformers 4.42 (the released weights' behaviour).

transformers 4.42 resized the learned patch position grid (sqrt(N) x sqrt(N)) for an input of
n x n patches with bicubic interpolation at ``scale_factor = (n + 0.1) / sqrt(N)`` (the output size
is floor(n + 0.1) = n, but the sampling positions follow the scale factor, not n / sqrt(N)).
transformers 5.x resizes to an exact size, which gives different features for inputs other than
518 px. The change lives only in this subclass; the installed transformers is not patched.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from transformers import Dinov2Config, Dinov2Model
from transformers.models.dinov2.modeling_dinov2 import Dinov2Embeddings


def legacy_resize_position_embeddings(position_embeddings: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Resize [1, 1 + N, D] position embeddings to [1, 1 + rows * cols, D] the transformers-4.42 way."""
    num_positions = position_embeddings.shape[1] - 1
    side = int(math.sqrt(num_positions))
    assert side * side == num_positions, f"position grid is not square: {num_positions}"
    dim = position_embeddings.shape[-1]
    cls_pos = position_embeddings[:, :1]
    grid = position_embeddings[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)  # [1, D, side, side]
    scale = (float((rows + 0.1) / math.sqrt(num_positions)), float((cols + 0.1) / math.sqrt(num_positions)))
    resized = F.interpolate(grid.to(torch.float32), scale_factor=scale, mode="bicubic", align_corners=False)
    resized = resized.to(position_embeddings.dtype)
    if resized.shape[-2:] != (rows, cols):
        raise ValueError(f"position-embedding resize produced {tuple(resized.shape[-2:])}, wanted {(rows, cols)}")
    return torch.cat([cls_pos, resized.permute(0, 2, 3, 1).reshape(1, rows * cols, dim)], dim=1)


class LegacyDinov2Embeddings(Dinov2Embeddings):
    """Dinov2Embeddings whose position-embedding interpolation follows transformers 4.42."""

    def interpolate_pos_encoding(self, embeddings: torch.Tensor, height: int, width: int) -> torch.Tensor:
        num_patches = embeddings.shape[1] - 1
        num_positions = self.position_embeddings.shape[1] - 1
        if num_patches == num_positions and height == width:
            return self.position_embeddings
        patch = self.patch_embeddings.patch_size
        return legacy_resize_position_embeddings(self.position_embeddings, height // patch[0], width // patch[1])


class LegacyDinov2Model(Dinov2Model):
    """``Dinov2Model`` with ``LegacyDinov2Embeddings``; state-dict names are unchanged."""

    def __init__(self, config: Dinov2Config) -> None:
        super().__init__(config)
        legacy = LegacyDinov2Embeddings(config)
        legacy.load_state_dict(self.embeddings.state_dict(), assign=True)
        self.embeddings = legacy
