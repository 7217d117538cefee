"""The mesh type every source object becomes: triangles with per-vertex colour, specularity and optional
base-colour textures sampled per pixel."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import trimesh

from vfusion3d_core.objects.materials import base_color

# Objects are scaled so every vertex lies within this distance of the origin: inside the [-1,1]^3 box
# and fully in view from any direction at the default radius 1.5 and fx = 0.75 (half-FOV 33.7 deg).
DEFAULT_BOUNDING_RADIUS = 0.8


class MeshError(ValueError):
    """A mesh that cannot be used (empty, non-finite, degenerate, unreadable)."""


@dataclass
class ColoredMesh:
    """A renderable object.

    vertices [V, 3] float32, faces [F, 3] int32, colors [V, 3] float32 in [0, 1] (base colour: material factor x
    vertex colour), normals [V, 3] float32 unit, specular [V] float32 in [0, 1] (0 = matte).
    Optional base-colour textures, sampled per pixel and multiplied by ``colors``: uvs [V, 2] float32 (OpenGL
    convention, v = 0 at the image's bottom row), textures list of [H, W, 4] uint8 RGBA (row 0 = image top),
    face_texture [F] int32 index into ``textures`` (-1 = untextured), alpha_cutoff one float per texture
    (fragments with texture alpha below it are discarded; 0 = opaque).
    """

    uid: str
    caption: str
    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray
    normals: np.ndarray
    specular: np.ndarray
    meta: dict = field(default_factory=dict)
    uvs: np.ndarray | None = None
    textures: list[np.ndarray] = field(default_factory=list)
    face_texture: np.ndarray | None = None
    alpha_cutoff: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        # explicit raises, not asserts: these checks must hold under python -O too
        v = len(self.vertices)
        if v == 0 or len(self.faces) == 0:
            raise MeshError(f"{self.uid}: mesh has no vertices or faces")
        _check_shape(self.uid, "vertices", self.vertices, (v, 3))
        _check_shape(self.uid, "colors", self.colors, (v, 3))
        _check_shape(self.uid, "normals", self.normals, (v, 3))
        _check_shape(self.uid, "specular", self.specular, (v,))
        _check_shape(self.uid, "faces", self.faces, (len(self.faces), 3))
        if not (np.isfinite(self.vertices).all() and np.isfinite(self.colors).all()):
            raise MeshError(f"{self.uid}: mesh has non-finite vertices or colours")
        if self.faces.min() < 0 or self.faces.max() >= v:
            raise MeshError(f"{self.uid}: face indices out of range")
        if "." in self.uid or "/" in self.uid or not self.uid:
            raise MeshError(f"uid {self.uid!r} must be non-empty and contain no '.' or '/'")
        if self.textures:
            if self.uvs is None or self.face_texture is None:
                raise MeshError(f"{self.uid}: textures need uvs and face_texture")
            _check_shape(self.uid, "uvs", self.uvs, (v, 2))
            _check_shape(self.uid, "face_texture", self.face_texture, (len(self.faces),))
            if len(self.alpha_cutoff) != len(self.textures):
                raise MeshError(f"{self.uid}: one alpha_cutoff per texture needed")
            if self.face_texture.min() < -1 or self.face_texture.max() >= len(self.textures):
                raise MeshError(f"{self.uid}: face_texture indices out of range")
            if not np.isfinite(self.uvs).all():
                raise MeshError(f"{self.uid}: non-finite texture coordinates")
            for t in self.textures:
                if t.ndim != 3 or t.shape[2] != 4 or t.dtype != np.uint8 or min(t.shape[:2]) == 0:
                    raise MeshError(f"{self.uid}: texture must be [H, W, 4] uint8, got {t.shape} {t.dtype}")

    @classmethod
    def from_trimesh(cls, uid: str, caption: str, mesh: trimesh.Trimesh, specular: float | np.ndarray = 0.1,
                     meta: dict | None = None, texture_cache: dict[int, np.ndarray] | None = None) -> ColoredMesh:
        """Wrap a trimesh: vertex colours, material colour, or a base-colour texture kept for per-pixel sampling.

        What cannot be used (e.g. a texture without UVs) is listed in ``meta["notes"]``. ``texture_cache``
        lets the primitives of one file share the conversion of a shared image.
        """
        if len(mesh.vertices) == 0 or len(mesh.faces) == 0:
            raise MeshError(f"{uid}: mesh has no vertices or faces")
        if mesh.visual is not None and mesh.visual.kind == "face":  # one colour per face: give each its vertices
            mesh = mesh.copy()
            mesh.unmerge_vertices()
        meta = dict(meta or {})
        notes = meta.setdefault("notes", [])
        color = base_color(mesh, notes, texture_cache)
        if color.texture is None and color.alpha_cutoff > 0 and color.factor_alpha < 1:
            # an untextured masked surface: a 1x1 texture carries the factor's alpha to the cutoff test
            alpha = np.uint8(round(color.factor_alpha * 255))
            color.texture = np.array([[[255, 255, 255, alpha]]], np.uint8)
            color.uvs = np.zeros((len(mesh.vertices), 2), np.float32)
        spec = np.broadcast_to(np.asarray(specular, np.float32), (len(mesh.vertices),)).copy()
        faces = np.asarray(mesh.faces, np.int32)
        textured = color.texture is not None
        return cls(uid, caption, np.asarray(mesh.vertices, np.float32), faces, color.colors,
                   np.asarray(mesh.vertex_normals, np.float32), spec, meta,
                   uvs=color.uvs if textured else None, textures=[color.texture] if textured else [],
                   face_texture=np.zeros(len(faces), np.int32) if textured else None,
                   alpha_cutoff=[color.alpha_cutoff] if textured else [])

    def to_trimesh(self) -> trimesh.Trimesh:
        """Export view (vertex colours as RGBA uint8; textures are not included)."""
        rgba = np.concatenate([self.colors, np.ones_like(self.colors[:, :1])], 1)
        return trimesh.Trimesh(self.vertices, self.faces, vertex_colors=(rgba * 255).round().astype(np.uint8),
                               vertex_normals=self.normals, process=False)

    @property
    def bounding_radius(self) -> float:
        return float(np.linalg.norm(self.vertices, axis=1).max())


def _check_shape(uid: str, name: str, array: np.ndarray, shape: tuple[int, ...]) -> None:
    if np.shape(array) != shape:
        raise MeshError(f"{uid}: {name} has shape {np.shape(array)}, expected {shape}")


def concatenate_meshes(uid: str, caption: str, parts: list[ColoredMesh], meta: dict | None = None) -> ColoredMesh:
    """One mesh from several (e.g. the primitives of a file): indices offset, identical textures shared."""
    if not parts:
        raise MeshError(f"{uid}: no parts to concatenate")
    offsets = np.cumsum([0] + [len(p.vertices) for p in parts[:-1]])
    textures: list[np.ndarray] = []
    cutoffs: list[float] = []
    index: dict[tuple[int, float], int] = {}  # (id of texture array, cutoff) -> position in ``textures``
    face_texture = []
    for p in parts:
        remap = np.full(len(p.textures) + 1, -1, np.int32)  # remap[-1] stays -1 (untextured)
        for i, (texture, cutoff) in enumerate(zip(p.textures, p.alpha_cutoff, strict=True)):
            key = (id(texture), float(cutoff))
            if key not in index:
                index[key] = len(textures)
                textures.append(texture)
                cutoffs.append(float(cutoff))
            remap[i] = index[key]
        own = p.face_texture if p.face_texture is not None else np.full(len(p.faces), -1, np.int32)
        face_texture.append(remap[own])
    uvs = None
    if textures:
        uvs = np.concatenate([p.uvs if p.uvs is not None else np.zeros((len(p.vertices), 2), np.float32)
                              for p in parts]).astype(np.float32)
    return ColoredMesh(
        uid, caption, np.concatenate([p.vertices for p in parts]).astype(np.float32),
        np.concatenate([p.faces + o for p, o in zip(parts, offsets, strict=True)]).astype(np.int32),
        np.concatenate([p.colors for p in parts]).astype(np.float32),
        np.concatenate([p.normals for p in parts]).astype(np.float32),
        np.concatenate([p.specular for p in parts]).astype(np.float32), dict(meta or {}),
        uvs=uvs, textures=textures, face_texture=np.concatenate(face_texture) if textures else None,
        alpha_cutoff=cutoffs)


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
