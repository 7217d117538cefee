"""Which parameters of an SVD-style UNet are temporal, and freezing everything else.

Rule: temporal parameters match ``temporal|time_mixer|time_pos_embed``. A bare "time"
filter would wrongly catch ``time_embedding``, ``add_embedding`` and the ResNets' ``time_emb_proj``,
which are spatial (shared with the image model).
"""

from __future__ import annotations

import re

from torch import nn

TEMPORAL_PATTERN = re.compile(r"temporal|time_mixer|time_pos_embed")


def is_temporal(name: str) -> bool:
    """True for a parameter name of a temporal layer."""
    return TEMPORAL_PATTERN.search(name) is not None


def freeze_spatial(module: nn.Module) -> tuple[int, int]:
    """Make only temporal parameters trainable; returns (trainable, frozen) parameter counts."""
    trainable = frozen = 0
    for name, p in module.named_parameters():
        keep = is_temporal(name)
        p.requires_grad_(keep)
        if keep:
            trainable += p.numel()
        else:
            frozen += p.numel()
    if trainable == 0:
        raise ValueError("no temporal parameters found: is this an SVD-style UNet?")
    return trainable, frozen
