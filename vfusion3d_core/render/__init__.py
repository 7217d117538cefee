"""Headless rendering of source objects into RGBA views with their cameras."""

from vfusion3d_core.render.rasterizer import MeshRasterizer, RendererUnavailable
from vfusion3d_core.render.views import RenderedViews, render_orbit, render_random_views, render_views

__all__ = ["MeshRasterizer", "RenderedViews", "RendererUnavailable", "render_orbit", "render_random_views",
           "render_views"]
