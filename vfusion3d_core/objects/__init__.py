"""3D source objects: a seeded procedural world with captions, and a loader for mesh folders.

The names below are imported on first use (``vfusion3d_core.lazy``): importing a light submodule such as
``vfusion3d_core.objects.listing`` (the code location's object listing) does not import trimesh."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vfusion3d_core.lazy import lazy_exports

if TYPE_CHECKING:
    from vfusion3d_core.objects.folder import (
        MeshNoteWarning,
        SkippedFile,
        list_mesh_files,
        load_mesh_file,
        read_captions,
        uid_for_path,
    )
    from vfusion3d_core.objects.listing import load_mesh_folder
    from vfusion3d_core.objects.mesh import ColoredMesh, MeshError, concatenate_meshes, normalize_into_box
    from vfusion3d_core.objects.procedural import ProceduralObjectGenerator, split_train_heldout

_EXPORTS = {
    "MeshNoteWarning": "folder", "SkippedFile": "folder", "list_mesh_files": "folder", "load_mesh_file": "folder",
    "read_captions": "folder", "uid_for_path": "folder",
    "load_mesh_folder": "listing",
    "ColoredMesh": "mesh", "MeshError": "mesh", "concatenate_meshes": "mesh", "normalize_into_box": "mesh",
    "ProceduralObjectGenerator": "procedural", "split_train_heldout": "procedural",
}
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)

__all__ = [
    "ColoredMesh",
    "MeshError",
    "MeshNoteWarning",
    "ProceduralObjectGenerator",
    "SkippedFile",
    "concatenate_meshes",
    "list_mesh_files",
    "load_mesh_file",
    "load_mesh_folder",
    "normalize_into_box",
    "read_captions",
    "split_train_heldout",
    "uid_for_path",
]
