"""UV unwrapping (xatlas) and baking a colour texture for a mesh, instead of vertex colours.

Texel (row r, column c) of a ``size`` x ``size`` image has its centre at uv = ((c + 0.5) / size,
1 - (r + 0.5) / size): v points up and row 0 is the top, trimesh's convention (its glTF / OBJ
writers convert to theirs). Each triangle is rasterised in uv space: every texel whose centre lies
inside it gets the colour at the matching 3D point (from the colour field when given, else the
barycentric blend of the vertex colours). Texels around the charts are then filled from their
neighbours for ``padding`` rings, so bilinear filtering and mipmaps at chart seams do not pull in
background; the rest of the image gets the mean colour.
"""

from __future__ import annotations

import numpy as np
import torch
import trimesh
import xatlas
from PIL import Image

from .mesh import PointFn

CANDIDATES_PER_CHUNK = 1 << 20  # texel candidates tested per batch of triangles (bounds memory)


def unwrap(vertices: np.ndarray, faces: np.ndarray, size: int, padding: int = 4
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """xatlas charts packed into one atlas of about ``size`` x ``size`` with ``padding`` texels between them.

    vertices [V, 3], faces [F, 3] -> (vmapping [V'] (original vertex of each new one), faces [F, 3]
    into the new vertices, uvs [V', 2] in [0, 1]); vertices are split along chart seams. xatlas sizes
    its atlas from an estimate (often 10-60% larger than ``size``); the uvs are normalised to it, so
    the gutter in a ``size`` image is somewhat narrower than ``padding`` texels."""
    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(vertices, dtype=np.float32), np.ascontiguousarray(faces, dtype=np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution = size
    pack.padding = padding
    pack.bilinear = True
    atlas.generate(pack_options=pack)
    if atlas.atlas_count != 1:  # charts spilled into a second atlas: their uvs would overlap; pack into one
        pack.texels_per_unit = atlas.texels_per_unit
        pack.resolution = 0  # no size limit: a single atlas
        atlas.generate(pack_options=pack)
    vmapping, new_faces, uvs = atlas[0]
    return vmapping.astype(np.int64), new_faces.astype(np.int64), uvs.astype(np.float64)


def _texel_candidates(corners: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Texels inside the bounding box of each triangle: corners [F, 3, 2] in texel units (x right,
    y down) -> (triangle index [K], row [K], column [K])."""
    lo = np.clip(np.ceil(corners.min(1) - 0.5), 0, size - 1).astype(np.int64)  # [F, 2] first centre inside
    hi = np.clip(np.floor(corners.max(1) - 0.5), -1, size - 1).astype(np.int64)  # [F, 2] last centre inside
    width, height = np.maximum(hi - lo + 1, 0).T  # [F] each
    count = width * height
    tri = np.repeat(np.arange(len(corners)), count)
    local = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    return tri, lo[tri, 1] + local // width[tri], lo[tri, 0] + local % width[tri]


def _barycentric(corners: np.ndarray, points: np.ndarray) -> np.ndarray:
    """corners [K, 3, 2], points [K, 2] -> barycentric weights [K, 3] (NaN for degenerate triangles)."""
    e1, e2, p = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0], points - corners[:, 0]
    den = e1[:, 0] * e2[:, 1] - e2[:, 0] * e1[:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        l1 = (p[:, 0] * e2[:, 1] - e2[:, 0] * p[:, 1]) / den
        l2 = (e1[:, 0] * p[:, 1] - p[:, 0] * e1[:, 1]) / den
    return np.stack([1 - l1 - l2, l1, l2], axis=1)


def _dilate(image: np.ndarray, filled: np.ndarray, rings: int) -> None:
    """In place: empty texels next to filled ones take the mean of those neighbours, ``rings`` times;
    whatever stays empty gets the mean filled colour. image [S, S, 3] float, filled [S, S] bool."""
    size = image.shape[0]
    for _ in range(rings):
        total = np.zeros_like(image)
        count = np.zeros(filled.shape)
        padded_img = np.pad(image * filled[..., None], ((1, 1), (1, 1), (0, 0)))
        padded_ok = np.pad(filled, 1).astype(np.float64)
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                total += padded_img[dy:dy + size, dx:dx + size]
                count += padded_ok[dy:dy + size, dx:dx + size]
        grow = ~filled & (count > 0)
        if not grow.any():
            break
        image[grow] = total[grow] / count[grow, None]
        filled |= grow
    if filled.any():
        image[~filled] = image[filled].mean(0)


def _colours_at(corner_points: np.ndarray, corner_rgb: np.ndarray | None, rgb_fn: PointFn | None,
                weights: np.ndarray, device: torch.device | str, chunk_points: int) -> np.ndarray:
    """Colours [K, 3] in [0, 1] at barycentric ``weights`` [K, 3] of triangles with corners [K, 3, 3]
    and corner colours [K, 3, 3] (used when ``rgb_fn`` is None)."""
    if rgb_fn is None:
        return np.einsum("kc,kcd->kd", weights, corner_rgb)
    points = torch.from_numpy(np.einsum("kc,kcd->kd", weights, corner_points).astype(np.float32))  # [K, 3]
    with torch.no_grad():
        return torch.cat([rgb_fn(points[i:i + chunk_points].to(device)).float().clamp(0, 1).cpu()
                          for i in range(0, len(points), chunk_points)]).numpy()


def bake_texture(mesh: trimesh.Trimesh, size: int = 1024, rgb_fn: PointFn | None = None, padding: int = 4,
                 chunk_points: int = 1 << 18, device: torch.device | str = "cpu") -> trimesh.Trimesh:
    """A copy of ``mesh`` (vertices [V, 3], faces [F, 3]) with xatlas uvs and a baked ``size`` x ``size``
    base-colour texture (trimesh ``TextureVisuals`` with a ``PBRMaterial``).

    Colours come from ``rgb_fn`` ([P, 3] -> [P, 3] in [0, 1], world points) when given, else from the
    mesh's vertex colours. Cost: xatlas grows with the face count (seconds per ~10k faces on a CPU
    core); decimate first for large meshes."""
    if size < 8:
        raise ValueError(f"texture size must be >= 8, got {size}")
    if rgb_fn is None and mesh.visual.kind != "vertex":
        raise ValueError("baking needs a colour field or a mesh with vertex colours")
    if len(mesh.faces) == 0:
        raise ValueError("cannot bake a texture for a mesh without faces")
    vmapping, faces, uvs = unwrap(mesh.vertices, mesh.faces, size, padding)
    positions = np.asarray(mesh.vertices, dtype=np.float64)[vmapping]  # [V', 3]
    rgb = None if rgb_fn is not None else np.asarray(mesh.visual.vertex_colors)[vmapping, :3] / 255.0  # [V', 3]
    texel = np.stack([uvs[:, 0] * size, (1 - uvs[:, 1]) * size], axis=1)  # [V', 2] x right, y down
    corners = texel[faces]  # [F, 3, 2]
    image = np.zeros((size, size, 3))
    filled = np.zeros((size, size), dtype=bool)
    # the centre texel of every triangle first, so triangles smaller than a texel still leave their colour
    centre = corners.mean(1)  # [F, 2]
    rows = np.clip(centre[:, 1].astype(np.int64), 0, size - 1)
    cols = np.clip(centre[:, 0].astype(np.int64), 0, size - 1)
    image[rows, cols] = _colours_at(positions[faces], None if rgb is None else rgb[faces], rgb_fn,
                                    np.full((len(faces), 3), 1 / 3), device, chunk_points)
    filled[rows, cols] = True
    # then every texel whose centre is covered, in batches of triangles of bounded candidate count
    box = np.maximum(np.ceil(corners.max(1) - corners.min(1)) + 1, 1).prod(1)  # [F] candidates at most
    bounds = np.searchsorted(np.cumsum(box), np.arange(1, int(box.sum() // CANDIDATES_PER_CHUNK) + 1)
                             * CANDIDATES_PER_CHUNK)
    for start, stop in zip(np.r_[0, bounds], np.r_[bounds, len(faces)], strict=True):
        if stop <= start:
            continue
        tri, row, col = _texel_candidates(corners[start:stop], size)
        weights = _barycentric(corners[start:stop][tri], np.stack([col + 0.5, row + 0.5], axis=1))
        inside = (weights >= -1e-6).all(1)  # NaN (degenerate) compares False: dropped
        tri, row, col, weights = tri[inside] + start, row[inside], col[inside], weights[inside]
        if len(tri):
            ids = faces[tri]  # [K, 3]
            image[row, col] = _colours_at(positions[ids], None if rgb is None else rgb[ids], rgb_fn, weights,
                                          device, chunk_points)
            filled[row, col] = True
    _dilate(image, filled, padding)
    texture = Image.fromarray(np.round(image * 255).astype(np.uint8))
    material = trimesh.visual.material.PBRMaterial(name="texture", baseColorTexture=texture, metallicFactor=0.0,
                                                   roughnessFactor=1.0)
    return trimesh.Trimesh(vertices=positions.astype(np.float32), faces=faces,
                           visual=trimesh.visual.TextureVisuals(uv=uvs, material=material), process=False)
