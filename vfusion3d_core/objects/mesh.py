"""The mesh type every source object becomes: triangles with per-vertex colour and specularity."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import trimesh

# Objects are scaled so every vertex lies within this distance of the origin: inside the [-1,1]^3 box
# and fully in view from any direction at the default radius 1.5 and fx = 0.75 (half-FOV 33.7 deg).
DEFAULT_BOUNDING_RADIUS = 0.8


class MeshError(ValueError):
    """A mesh that cannot be used (empty, non-finite, degenerate, unreadable)."""


@dataclass
class ColoredMesh:
    """A renderable object.

    vertices [V, 3] float32, faces [F, 3] int32, colors [V, 3] float32 in [0, 1],
    normals [V, 3] float32 unit, specular [V] float32 in [0, 1] (0 = matte).
    """

    uid: str
    caption: str
    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray
    normals: np.ndarray
    specular: np.ndarray
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        v = len(self.vertices)
        if v == 0 or len(self.faces) == 0:
            raise MeshError(f"{self.uid}: mesh has no vertices or faces")
        assert self.vertices.shape == (v, 3) and self.colors.shape == (v, 3), (self.vertices.shape, self.colors.shape)
        assert self.normals.shape == (v, 3) and self.specular.shape == (v,), (self.normals.shape, self.specular.shape)
        assert self.faces.ndim == 2 and self.faces.shape[1] == 3, self.faces.shape
        if not (np.isfinite(self.vertices).all() and np.isfinite(self.colors).all()):
            raise MeshError(f"{self.uid}: mesh has non-finite vertices or colours")
        if self.faces.min() < 0 or self.faces.max() >= v:
            raise MeshError(f"{self.uid}: face indices out of range")
        if "." in self.uid or "/" in self.uid or not self.uid:
            raise MeshError(f"uid {self.uid!r} must be non-empty and contain no '.' or '/'")

    @classmethod
    def from_trimesh(cls, uid: str, caption: str, mesh: trimesh.Trimesh, specular: float | np.ndarray = 0.1,
                     meta: dict | None = None) -> ColoredMesh:
        """Wrap a trimesh (vertex colours, or a texture sampled to vertex colours) as a ColoredMesh."""
        if len(mesh.vertices) == 0 or len(mesh.faces) == 0:
            raise MeshError(f"{uid}: mesh has no vertices or faces")
        colors = _vertex_colors(mesh)
        spec = np.broadcast_to(np.asarray(specular, np.float32), (len(mesh.vertices),)).copy()
        return cls(uid, caption, np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.int32),
                   colors, np.asarray(mesh.vertex_normals, np.float32), spec, dict(meta or {}))

    def to_trimesh(self) -> trimesh.Trimesh:
        """Export view (vertex colours as RGBA uint8)."""
        rgba = np.concatenate([self.colors, np.ones_like(self.colors[:, :1])], 1)
        return trimesh.Trimesh(self.vertices, self.faces, vertex_colors=(rgba * 255).round().astype(np.uint8),
                               vertex_normals=self.normals, process=False)

    @property
    def bounding_radius(self) -> float:
        return float(np.linalg.norm(self.vertices, axis=1).max())


def _vertex_colors(mesh: trimesh.Trimesh) -> np.ndarray:
    """[V, 3] float colours from a trimesh visual: vertex colours, face colours or a sampled texture."""
    visual = mesh.visual
    if isinstance(visual, trimesh.visual.texture.TextureVisuals):
        try:
            visual = visual.to_color()
        except Exception:  # no image or no UVs: fall back to the material's main colour below
            visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=_material_color(mesh.visual))
    colors = np.asarray(visual.vertex_colors, np.float32)[:, :3] / 255.0
    if colors.shape[0] != len(mesh.vertices):
        colors = np.full((len(mesh.vertices), 3), 0.7, np.float32)
    return colors


def _material_color(visual: trimesh.visual.texture.TextureVisuals) -> np.ndarray:
    material = getattr(visual, "material", None)
    color = getattr(material, "main_color", None)
    return np.array([180, 180, 180, 255], np.uint8) if color is None else np.asarray(color, np.uint8)


def normalize_into_box(mesh: ColoredMesh, bounding_radius: float = DEFAULT_BOUNDING_RADIUS) -> ColoredMesh:
    """Centre the bounding box at the origin and scale so the farthest vertex is ``bounding_radius`` away.

    Computed in float64 with the norm taken on coordinates pre-divided by their largest magnitude, so any
    finite float32 scale (coordinates of 1e30 and more) is scaled, never overflowing to inf. Raises MeshError
    for a degenerate mesh (all vertices at one point).
    """
    vertices = np.asarray(mesh.vertices, np.float64)
    lo, hi = vertices.min(0), vertices.max(0)
    centred = vertices - (lo / 2 + hi / 2)  # halves first: lo + hi itself can overflow
    largest = float(np.abs(centred).max())
    if not np.isfinite(largest):
        raise MeshError(f"{mesh.uid}: non-finite vertex coordinates")
    extent = largest * float(np.linalg.norm(centred / largest, axis=1).max()) if largest > 0 else 0.0
    if extent < 1e-8:
        raise MeshError(f"{mesh.uid}: degenerate mesh (zero extent)")
    mesh.vertices = (centred * (bounding_radius / extent)).astype(np.float32)
    return mesh
