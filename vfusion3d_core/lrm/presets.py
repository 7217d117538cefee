"""Scale presets of the LRM: ``tiny`` (2-core CPU), ``small`` (one GPU), ``paper`` (released config).

The table lives in ``LRMConfig.presets``; ``get_preset(name)`` is ``LRMConfig.preset(name)``.
"""

from __future__ import annotations

from .config import LRMConfig

PRESETS = ("tiny", "small", "paper")


def get_preset(name: str) -> LRMConfig:
    """Config of the named preset; raises ValueError for unknown names."""
    return LRMConfig.preset(name)
