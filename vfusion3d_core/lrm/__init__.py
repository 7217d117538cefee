"""Triplane large reconstruction model (LRM) compatible with the released VFusion3D weights.

The names below are imported on first use (``vfusion3d_core.lazy``): importing a light submodule such as
``vfusion3d_core.lrm.cli`` (``vfusion3d generate --help``) does not import torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vfusion3d_core.lazy import lazy_exports

if TYPE_CHECKING:
    from .config import LRMConfig
    from .convert import CheckpointMismatchError, convert_official_state_dict
    from .model import LRM
    from .presets import PRESETS, get_preset

_EXPORTS = {"LRMConfig": "config", "CheckpointMismatchError": "convert", "convert_official_state_dict": "convert",
            "LRM": "model", "PRESETS": "presets", "get_preset": "presets"}
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)

__all__ = ["LRM", "LRMConfig", "CheckpointMismatchError", "convert_official_state_dict", "PRESETS", "get_preset"]
