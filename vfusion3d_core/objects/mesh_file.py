"""Read one .glb/.gltf/.obj/.ply file into a ColoredMesh in the project's Z-up world (not yet normalized).

Every mesh instance of the file's scene graph is placed by its node transform and all are merged into one
mesh. glTF is Y-up by specification and is always turned to Z-up; OBJ and PLY carry no convention, so
``up_axis`` says which axis of the file is up ("y", as Blender's importers assume, or "z"). What the file holds
but cannot be used (line/point elements, unsupported glTF extensions, missing textures) is listed by name in
``mesh.meta["notes"]``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import struct
from pathlib import Path

import numpy as np
import trimesh

from vfusion3d_core.objects.mesh import ColoredMesh, MeshError, concatenate_meshes

UP_AXES = ("y", "z")
GLTF_SUFFIXES = (".glb", ".gltf")
# Y-up to Z-up, a +90 deg rotation about X: (x, y, z) -> (x, -z, y), so the file's +Y becomes world +Z.
Y_UP_TO_Z_UP = np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], np.float64)
# glTF extensions trimesh's reader turns into the base colour used here (spec-gloss diffuse -> base colour).
HANDLED_GLTF_EXTENSIONS = {"KHR_materials_pbrSpecularGlossiness"}
DRACO = "KHR_draco_mesh_compression"
# glTF primitive modes trimesh does not read as triangles (it reads TRIANGLES 4 and TRIANGLE_STRIP 5; it drops
# TRIANGLE_FAN and loops/strips of lines silently, and turns POINTS/LINES into point clouds and paths).
GLTF_MODE_NAMES = {0: "POINTS", 1: "LINES", 2: "LINE_LOOP", 3: "LINE_STRIP", 6: "TRIANGLE_FAN"}


def read_mesh_file(path: Path, uid: str, caption: str, *, up_axis: str = "y") -> ColoredMesh:
    """All triangles of the file at ``path`` as one ColoredMesh (Z-up, not normalized).

    Raises MeshError with the reason when the file is unreadable or holds no usable triangles, ValueError for an
    unknown ``up_axis``.
    """
    if up_axis not in UP_AXES:
        raise ValueError(f"up_axis must be one of {UP_AXES}, got {up_axis!r}")
    suffix = path.suffix.lower()
    is_gltf = suffix in GLTF_SUFFIXES
    notes = _gltf_notes(_gltf_json(path)) if is_gltf else []
    resolver = _AssetResolver(path)
    try:
        scene = trimesh.load(str(path), force="scene", process=False, resolver=resolver)
    except Exception as exc:  # trimesh raises many types for malformed files
        raise MeshError(f"unreadable mesh: {type(exc).__name__}: {exc}") from exc
    if resolver.missing:
        notes.append(f"referenced file(s) not found: {', '.join(sorted(set(resolver.missing)))}")
    if suffix == ".obj":
        notes.extend(_obj_line_point_notes(path))
    to_world = Y_UP_TO_Z_UP if is_gltf or up_axis == "y" else np.eye(4)
    parts, converted, cache, ignored = [], {}, {}, []
    for node in scene.graph.nodes_geometry:
        transform, name = scene.graph[node]
        geometry = scene.geometry.get(name)
        if not isinstance(geometry, trimesh.Trimesh):
            if geometry is not None and not is_gltf:  # glTF line/point primitives are reported from its JSON
                ignored.append(f"{name!r} ({type(geometry).__name__})")
            continue
        if len(geometry.faces) == 0:
            continue
        if name not in converted:
            _check_geometry(name, geometry)
            converted[name] = ColoredMesh.from_trimesh(uid, caption, geometry, texture_cache=cache)
            notes.extend(converted[name].meta.get("notes", []))
            if "edge" in geometry.metadata.get("_ply_raw", {}):
                notes.append("PLY 'edge' element ignored (lines)")
        parts.append(_placed(converted[name], to_world @ np.asarray(transform, np.float64)))
    if ignored:
        notes.append(f"point/line geometry ignored: {', '.join(sorted(set(ignored)))}")
    notes = list(dict.fromkeys(notes))  # a shared material is reported once
    if not parts:
        raise MeshError("no triangles in file" + (f" ({'; '.join(notes)})" if notes else ""))
    meta = {"source": "folder", "file": path.name, "up_axis": "y" if is_gltf else up_axis, "notes": notes}
    return concatenate_meshes(uid, caption, parts, meta)


def _check_geometry(name: str, geometry: trimesh.Trimesh) -> None:
    """Reject what would make the conversion fail obscurely (broken files name the geometry)."""
    faces = np.asarray(geometry.faces)
    if faces.min() < 0 or faces.max() >= len(geometry.vertices):
        raise MeshError(f"geometry {name!r}: face indices out of range")
    if not np.isfinite(np.asarray(geometry.vertices, np.float64)).all():
        raise MeshError(f"geometry {name!r}: non-finite vertex coordinates")


def _placed(part: ColoredMesh, matrix: np.ndarray) -> ColoredMesh:
    """``part`` moved by the 4x4 ``matrix``: normals by its inverse transpose, winding kept outward."""
    linear, shift = matrix[:3, :3], matrix[:3, 3]
    vertices = np.asarray(part.vertices, np.float64) @ linear.T + shift
    normals = np.asarray(part.normals, np.float64) @ np.linalg.pinv(linear)  # n' = inv(M)^T n, in row form
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.where(length > 1e-12, normals / np.maximum(length, 1e-12), [0.0, 0.0, 1.0])
    faces = part.faces[:, ::-1] if np.linalg.det(linear) < 0 else part.faces  # a mirroring node flips winding
    return dataclasses.replace(part, vertices=vertices.astype(np.float32), normals=normals.astype(np.float32),
                               faces=np.ascontiguousarray(faces))


class _AssetResolver(trimesh.resolvers.FilePathResolver):
    """Finds the files an asset references (textures, buffers) in its folder, also when they are written with
    Windows separators (``.\\tex.jpg``) or another letter case, and remembers the names it could not find."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.missing: list[str] = []

    def get(self, name: str) -> bytes:
        plain = name.strip().replace("\\", "/")
        for candidate in (name, plain, os.path.basename(plain), self._other_case(os.path.basename(plain))):
            if candidate:
                try:
                    return super().get(candidate)
                except Exception:  # not there under this spelling: try the next one
                    continue
        self.missing.append(name.strip())
        raise FileNotFoundError(name)

    def _other_case(self, base: str) -> str | None:
        matches = [n for n in os.listdir(self.parent) if n.lower() == base.lower()]
        return matches[0] if matches else None


def _gltf_json(path: Path) -> dict:
    """The JSON document of a .gltf or .glb file ({} when unreadable: trimesh then reports the error)."""
    try:
        with open(path, "rb") as f:
            if path.suffix.lower() == ".glb":
                magic, _, _, length, kind = struct.unpack("<4sIII4s", f.read(20))
                document = json.loads(f.read(length)) if magic == b"glTF" and kind == b"JSON" else {}
            else:
                document = json.load(f)
    except Exception:
        return {}
    return document if isinstance(document, dict) else {}


def _gltf_notes(document: dict) -> list[str]:
    """Notes on glTF content that is not used; raises MeshError for Draco geometry without a decoder."""
    used = [e for e in _list(document.get("extensionsUsed")) if isinstance(e, str)]
    if DRACO in used and importlib.util.find_spec("DracoPy") is None:
        raise MeshError(f"geometry is compressed with {DRACO} and no Draco decoder (DracoPy) is installed")
    notes = []
    ignored = sorted(set(used) - HANDLED_GLTF_EXTENSIONS - {DRACO})
    if ignored:
        notes.append(f"glTF extension(s) not used: {', '.join(ignored)}")
    skipped: dict[str, list[str]] = {}
    for i, mesh in enumerate(_list(document.get("meshes"))):
        mesh = mesh if isinstance(mesh, dict) else {}
        for primitive in _list(mesh.get("primitives")):
            mode = primitive.get("mode", 4) if isinstance(primitive, dict) else 4
            if mode in GLTF_MODE_NAMES:
                skipped.setdefault(GLTF_MODE_NAMES[mode], []).append(repr(mesh.get("name") or f"mesh {i}"))
    for mode, meshes in skipped.items():
        notes.append(f"glTF {mode} primitive(s) ignored in {', '.join(dict.fromkeys(meshes))}")
    return notes


def _list(value: object) -> list:
    return value if isinstance(value, list) else []


def _obj_line_point_notes(path: Path) -> list[str]:
    """trimesh drops OBJ line ('l') and point ('p') statements silently: count them to report them."""
    counts = {b"l": 0, b"p": 0}
    with open(path, "rb") as f:
        for line in f:
            key = line.split(maxsplit=1)[:1]
            if key and key[0] in counts:
                counts[key[0]] += 1
    names = {b"l": "line", b"p": "point"}
    return [f"OBJ {names[k]} element(s) ignored: {n} '{k.decode()}' statement(s)" for k, n in counts.items() if n]
