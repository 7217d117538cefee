"""Decimation of an extracted mesh to a face budget (quadric edge collapse via fast_simplification)."""

from __future__ import annotations

import numpy as np
import torch
import trimesh

from .mesh import PointFn, vertex_colours


def decimate(mesh: trimesh.Trimesh, max_faces: int, rgb_fn: PointFn | None = None, chunk_points: int = 1 << 18,
             device: torch.device | str = "cpu") -> trimesh.Trimesh:
    """``mesh`` with at most ``max_faces`` faces (unchanged if it already fits), vertex colours kept.

    Collapsing edges moves vertices, so the colours are re-queried from ``rgb_fn`` ([P, 3] -> [P, 3]
    in [0, 1]) at the new vertices when given, else taken from the nearest original vertex.

    The collapse can stall above a small budget (many small separate pieces, open borders at the box):
    then the smallest pieces are dropped until the rest fits; ValueError if even the largest does not."""
    if max_faces < 1:
        raise ValueError(f"max_faces must be >= 1, got {max_faces}")
    if len(mesh.faces) <= max_faces:
        return mesh
    simple = mesh.simplify_quadric_decimation(face_count=max_faces)
    if len(simple.faces) > max_faces:  # the count is approximate: ask once for correspondingly fewer
        simple = mesh.simplify_quadric_decimation(face_count=max(1, 2 * max_faces - len(simple.faces)))
    if len(simple.faces) > max_faces:
        simple = _largest_pieces(simple, max_faces)
    vertices = np.ascontiguousarray(simple.vertices, dtype=np.float32)  # [V', 3]
    faces = np.asarray(simple.faces, dtype=np.int64)  # [F', 3]
    if rgb_fn is not None:
        colours = vertex_colours(rgb_fn, vertices, chunk_points, device)
    elif mesh.visual.kind == "vertex":
        _, nearest = mesh.kdtree.query(vertices)
        colours = np.asarray(mesh.visual.vertex_colors)[nearest]  # [V', 4]
    else:
        colours = None
    return trimesh.Trimesh(vertices=vertices, faces=faces, vertex_colors=colours, process=False)


def _largest_pieces(mesh: trimesh.Trimesh, max_faces: int) -> trimesh.Trimesh:
    """The connected pieces of ``mesh``, largest first, up to the first that would exceed ``max_faces``
    (never small floaters in place of the main piece)."""
    pieces = sorted(mesh.split(only_watertight=False), key=lambda piece: len(piece.faces), reverse=True)
    kept, total = [], 0
    for piece in pieces:
        if total + len(piece.faces) > max_faces:
            break
        kept.append(piece)
        total += len(piece.faces)
    if not kept:
        raise ValueError(f"cannot decimate to {max_faces} faces: the largest piece keeps {len(pieces[0].faces)}; "
                         "use a larger face budget")
    return trimesh.util.concatenate(kept)
