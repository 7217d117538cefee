"""The data-source ablation (docs/ablation.md): 3D-only vs synthetic vs synthetic -> 3D vs oracle LRM arms,
compute-matched, over seeds and synthetic-data doses, from disjoint object populations."""

from vfusion3d_core.ablation.config import AblationConfig

__all__ = ["AblationConfig"]
