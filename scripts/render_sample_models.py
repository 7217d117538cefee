"""Render real public sample models (Debian package assimp-testmodels) into the images of docs/real-assets.md.

    python scripts/render_sample_models.py [--models /usr/share/assimp/models] [--out docs/images]

Writes real_assets.png (a contact sheet: 4 orbit views per model at 256 px, composited on white) and
texture_per_pixel_vs_vertex.png (BoxTextured with its texture sampled onto its 24 vertices, the old behaviour,
next to per-pixel sampling).
"""

from __future__ import annotations

import argparse
import dataclasses
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vfusion3d_core import cameras as C
from vfusion3d_core.objects import ColoredMesh, MeshNoteWarning, load_mesh_file
from vfusion3d_core.render import render_views

SAMPLES = [
    ("glTF2/2CylinderEngine-glTF-Binary/2CylinderEngine.glb", "2CylinderEngine.glb: 34 meshes, 115 nodes"),
    ("glTF2/BoxTextured-glTF-Binary/BoxTextured.glb", "BoxTextured.glb: PNG base-colour texture"),
    ("OBJ/spider.obj", "spider.obj + .mtl: 4 JPEG textures"),
    ("OBJ/WusonOBJ.obj", "WusonOBJ.obj: no material (default grey)"),
    ("PLY/Wuson.ply", "Wuson.ply"),
]
SIZE = 256
LABEL_HEIGHT = 22


def on_white(rgba: np.ndarray) -> np.ndarray:
    """[..., 4] uint8 straight-alpha RGBA composited on white -> [..., 3] uint8."""
    alpha = rgba[..., 3:].astype(np.float32) / 255.0
    return np.round(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)


def views_strip(mesh: ColoredMesh, num_views: int = 4) -> np.ndarray:
    """[S, num_views * S, 3] uint8: an orbit at 20 deg elevation, first view from azimuth 30 deg."""
    cams = C.orbit_cameras(num_views, elevation_deg=20.0, azimuth_start_deg=30.0)
    return np.concatenate(list(on_white(render_views(mesh, cams, SIZE).rgba)), axis=1)


def labelled(strip: np.ndarray, label: str) -> np.ndarray:
    """The strip with a line of text above it."""
    image = Image.new("RGB", (strip.shape[1], strip.shape[0] + LABEL_HEIGHT), "white")
    image.paste(Image.fromarray(strip), (0, LABEL_HEIGHT))
    ImageDraw.Draw(image).text((6, 5), label, fill=(0, 0, 0))
    return np.asarray(image)


def texture_on_vertices(mesh: ColoredMesh) -> ColoredMesh:
    """The old behaviour: each vertex takes the texel at its UV (nearest), the texture itself is dropped."""
    colors = mesh.colors.copy()
    for index, texture in enumerate(mesh.textures):
        used = np.unique(mesh.faces[mesh.face_texture == index])
        height, width = texture.shape[:2]
        u, v = mesh.uvs[used, 0] % 1.0, mesh.uvs[used, 1] % 1.0
        rows = np.clip(((1.0 - v) * height).astype(int), 0, height - 1)  # v = 0 is the image's bottom row
        cols = np.clip((u * width).astype(int), 0, width - 1)
        colors[used] *= texture[rows, cols, :3].astype(np.float32) / 255.0
    return dataclasses.replace(mesh, colors=colors, uvs=None, textures=[], face_texture=None, alpha_cutoff=[])


def save_small(array: np.ndarray, path: Path) -> None:
    """PNG with an adaptive 256-colour palette: renders on white need no more, and the file stays small."""
    Image.fromarray(array).quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("/usr/share/assimp/models"))
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for relative, label in SAMPLES:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", MeshNoteWarning)
            mesh = load_mesh_file(args.models / relative, "sample", label)
        for warning in caught:
            print(f"note: {warning.message}")
        rows.append(labelled(views_strip(mesh), label))
    save_small(np.concatenate(rows, axis=0), args.out / "real_assets.png")

    box = load_mesh_file(args.models / SAMPLES[1][0], "box", "box")
    cams = C.orbit_cameras(1, elevation_deg=25.0, azimuth_start_deg=35.0)
    pair = [on_white(render_views(m, cams, SIZE).rgba[0]) for m in (texture_on_vertices(box), box)]
    save_small(np.concatenate([labelled(pair[0], "texture sampled onto vertices (before)"),
                               labelled(pair[1], "texture sampled per pixel (now)")], axis=1),
               args.out / "texture_per_pixel_vs_vertex.png")


if __name__ == "__main__":
    main()
