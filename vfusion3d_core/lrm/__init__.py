"""Triplane large reconstruction model (LRM) compatible with the released VFusion3D weights."""

from .config import LRMConfig
from .convert import CheckpointMismatchError, convert_official_state_dict
from .model import LRM
from .presets import PRESETS, get_preset

__all__ = ["LRM", "LRMConfig", "CheckpointMismatchError", "convert_official_state_dict", "PRESETS", "get_preset"]
