"""Writing meshes to .glb / .obj / .ply with an explicit up axis.

The project's world is z-up (docs/cameras.md). glTF is y-up by specification, so a .glb is always
written y-up. Blender's OBJ importer also assumes y-up by default (forward -Z, up Y), so .obj and .ply
are written y-up too unless ``up_axis="z"`` asks for the world frame unchanged. y-up is the world
rotated -90 degrees about X: (x, y, z) -> (x, z, -y), so world +Z becomes +Y and world +Y becomes -Z
(the default camera, on world -Y, then looks along -Z like a glTF / Blender front view).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh

from .options import MESH_FORMATS, UP_AXES  # noqa: F401  (re-exported)

# 4x4: world z-up -> y-up, (x, y, z) -> (x, z, -y); a proper rotation, so face winding is unchanged
Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0, 0.0],
                         [0.0, 0.0, 1.0, 0.0],
                         [0.0, -1.0, 0.0, 0.0],
                         [0.0, 0.0, 0.0, 1.0]])


def to_up_axis(mesh: trimesh.Trimesh, up_axis: str) -> trimesh.Trimesh:
    """A copy of ``mesh`` (world z-up) in the ``up_axis`` convention ("y": rotated; "z": unchanged)."""
    if up_axis not in UP_AXES:
        raise ValueError(f"unknown up axis {up_axis!r}; use one of {UP_AXES}")
    out = mesh.copy()
    if up_axis == "y":
        out.apply_transform(Z_UP_TO_Y_UP)
    return out


def export_mesh(mesh: trimesh.Trimesh, path: str | Path, up_axis: str = "y") -> list[Path]:
    """Write ``mesh`` (world z-up, vertex colours or a texture) as .glb / .obj / .ply by suffix.

    Returns every file written, the mesh first: a textured .obj also writes ``mesh.mtl`` (named after
    the .obj) and its texture image next to it. .glb is always y-up (``up_axis="z"`` is refused: it
    would break the glTF specification); a texture cannot be written to .ply (refused)."""
    out = Path(path)
    fmt = out.suffix.lstrip(".").lower()
    if fmt not in MESH_FORMATS:
        raise ValueError(f"unsupported mesh format {out.suffix!r}; use one of {MESH_FORMATS}")
    if fmt == "glb" and up_axis != "y":
        raise ValueError("a .glb is always y-up (glTF specification); up axis 'z' only applies to .obj / .ply")
    textured = mesh.visual.kind == "texture"
    if textured and fmt == "ply":
        raise ValueError("a texture cannot be written to .ply; use .glb or .obj, or vertex colours")
    mesh = to_up_axis(mesh, up_axis)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "obj" and textured:
        # write the .mtl and texture ourselves so their names are known (and listed for the caller)
        text, extras = trimesh.exchange.obj.export_obj(mesh, return_texture=True, mtl_name=f"{out.stem}.mtl")
        out.write_text(text)
        files = [out]
        for name, data in extras.items():
            (out.parent / name).write_bytes(data)
            files.append(out.parent / name)
        return files
    mesh.export(out, file_type=fmt)
    return [out]


def save_mesh(mesh: trimesh.Trimesh, path: str | Path, up_axis: str = "y") -> Path:
    """Write ``mesh`` like ``export_mesh`` and return the mesh file's path."""
    return export_mesh(mesh, path, up_axis)[0]
