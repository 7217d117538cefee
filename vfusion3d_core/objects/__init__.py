"""3D source objects: a seeded procedural world with captions, and a loader for mesh folders."""

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
