"""Render an object as a 16-view orbit or as random views, returning images and their cameras."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vfusion3d_core.cameras import (
    DEFAULT_ORBIT_VIEWS,
    DEFAULT_RADIUS,
    CameraSet,
    Intrinsics,
    orbit_cameras,
    random_cameras,
)
from vfusion3d_core.objects.mesh import ColoredMesh
from vfusion3d_core.render.rasterizer import MeshRasterizer


@dataclass
class RenderedViews:
    """Views of one object: rgba uint8 [V, S, S, 4] (straight alpha = coverage) and their cameras."""

    uid: str
    caption: str
    rgba: np.ndarray
    cameras: CameraSet

    def __post_init__(self) -> None:
        # raises, not asserts: the contract must hold under python -O too
        if self.rgba.ndim != 4 or self.rgba.shape[-1] != 4 or self.rgba.dtype != np.uint8:
            raise ValueError(f"rgba must be uint8 [V, S, S, 4], got {self.rgba.shape} {self.rgba.dtype}")
        if self.rgba.shape[0] != len(self.cameras):
            raise ValueError(f"{self.rgba.shape[0]} images for {len(self.cameras)} cameras")


_DEFAULT_RASTERIZER: MeshRasterizer | None = None


def default_rasterizer() -> MeshRasterizer:
    """A process-wide rasterizer so the GL context is created once."""
    global _DEFAULT_RASTERIZER
    if _DEFAULT_RASTERIZER is None:
        _DEFAULT_RASTERIZER = MeshRasterizer()
    return _DEFAULT_RASTERIZER


def render_views(mesh: ColoredMesh, cameras: CameraSet, size: int, rasterizer: MeshRasterizer | None = None
                 ) -> RenderedViews:
    """Render ``mesh`` from every camera of ``cameras`` at ``size`` x ``size``."""
    if size < 8:
        raise ValueError(f"render size must be >= 8, got {size}")
    raster = rasterizer or default_rasterizer()
    return RenderedViews(mesh.uid, mesh.caption, raster.render(mesh, cameras.c2w, cameras.intrinsics, size), cameras)


def render_orbit(mesh: ColoredMesh, size: int, num_views: int = DEFAULT_ORBIT_VIEWS,
                 elevation_range_deg: tuple[float, float] = (0.0, 45.0), radius: float = DEFAULT_RADIUS,
                 intrinsics: Intrinsics = Intrinsics(), generator: torch.Generator | None = None,
                 rasterizer: MeshRasterizer | None = None) -> RenderedViews:
    """A VFusion3D-style orbit: ``num_views`` frames, azimuth i * 360 / V, one random elevation."""
    cams = orbit_cameras(num_views, elevation_range_deg=elevation_range_deg, radius=radius, intrinsics=intrinsics,
                         generator=generator)
    return render_views(mesh, cams, size, rasterizer)


def render_random_views(mesh: ColoredMesh, size: int, num_views: int,
                        elevation_range_deg: tuple[float, float] = (-10.0, 60.0), radius: float = DEFAULT_RADIUS,
                        intrinsics: Intrinsics = Intrinsics(), generator: torch.Generator | None = None,
                        rasterizer: MeshRasterizer | None = None) -> RenderedViews:
    """``num_views`` views from random directions at distance ``radius``."""
    cams = random_cameras(num_views, elevation_range_deg, (radius, radius), intrinsics, generator)
    return render_views(mesh, cams, size, rasterizer)
