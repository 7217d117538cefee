"""Base colour of one trimesh geometry: vertex colours, material colour factor, texture with its UVs, alpha mode.

Only the base colour is used (the renderer has no PBR metallic/roughness, normal or emissive maps).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh
from PIL import Image

# Colour of a surface whose file gives none (Blender's default base colour).
DEFAULT_COLOR = (0.8, 0.8, 0.8)
# Larger texture images are downscaled (aspect kept) so one asset cannot exhaust GPU memory; 2048 px is far
# above what a 256-512 px render can show of one texture.
MAX_TEXTURE_SIZE = 2048
# glTF alphaMode BLEND has no order-independent equivalent here: it is drawn as MASK with this cutoff.
BLEND_CUTOFF = 0.5


@dataclass
class BaseColor:
    """The base colour of one geometry.

    colors [V, 3] float32 in [0, 1] (colour factor x vertex colour), uvs [V, 2] float32 in the OpenGL convention
    (v = 0 at the bottom row of the image) or None, texture [H, W, 4] uint8 RGBA with row 0 at the top of the
    image (its alpha already multiplied by the factor's alpha) or None, alpha_cutoff: fragments whose texture
    alpha is below it are discarded (0 = opaque), factor_alpha: the colour factor's alpha in [0, 1].
    """

    colors: np.ndarray
    uvs: np.ndarray | None = None
    texture: np.ndarray | None = None
    alpha_cutoff: float = 0.0
    factor_alpha: float = 1.0


def base_color(geometry: trimesh.Trimesh, notes: list[str], texture_cache: dict[int, np.ndarray] | None = None
               ) -> BaseColor:
    """The base colour of ``geometry``; what cannot be used is appended to ``notes`` by name.

    ``texture_cache`` (id of a PIL image -> RGBA array) converts an image shared by many primitives once.
    """
    visual = geometry.visual
    count = len(geometry.vertices)
    if isinstance(visual, trimesh.visual.texture.TextureVisuals):
        return _from_material(geometry, visual, notes, {} if texture_cache is None else texture_cache)
    if visual is not None and visual.kind in ("vertex", "face"):
        return BaseColor(_rgb(visual.vertex_colors, count))
    return BaseColor(np.tile(np.float32(DEFAULT_COLOR), (count, 1)))


def _from_material(geometry: trimesh.Trimesh, visual: trimesh.visual.texture.TextureVisuals, notes: list[str],
                   cache: dict[int, np.ndarray]) -> BaseColor:
    count = len(geometry.vertices)
    material = visual.material
    name = getattr(material, "name", None) or "unnamed material"
    if isinstance(material, trimesh.visual.material.PBRMaterial):
        factor, image = material.baseColorFactor, material.baseColorTexture
        mode, cutoff = (material.alphaMode or "OPAQUE").upper(), material.alphaCutoff
    else:
        factor, image = getattr(material, "diffuse", None), getattr(material, "image", None)
        mode, cutoff = "OPAQUE", None
        if image is not None and getattr(image, "format", None) is None:
            # trimesh gives a material-less file with UVs a generated 2x2 grey image: the file has no colour
            return BaseColor(np.tile(np.float32(DEFAULT_COLOR), (count, 1)))
    rgba = np.ones(4, np.float32) if factor is None else np.asarray(factor, np.float32).reshape(-1)[:4] / 255.0
    rgba = np.concatenate([rgba, np.ones(4 - len(rgba), np.float32)])
    colors = np.tile(rgba[:3], (count, 1))
    vertex_colors = visual.vertex_attributes.get("color") if hasattr(visual, "vertex_attributes") else None
    if vertex_colors is not None and len(vertex_colors) == count:  # glTF COLOR_0 multiplies the base colour
        colors = colors * _rgb(vertex_colors, count)
    alpha_cutoff = 0.0
    if mode == "MASK":
        alpha_cutoff = 0.5 if cutoff is None else float(cutoff)
    elif mode == "BLEND":
        alpha_cutoff = BLEND_CUTOFF
        notes.append(f"alphaMode BLEND of {name!r} drawn as MASK with cutoff {BLEND_CUTOFF}")
    result = BaseColor(colors.astype(np.float32), alpha_cutoff=alpha_cutoff, factor_alpha=float(rgba[3]))
    if image is None:
        return result
    uv = None if visual.uv is None else np.asarray(visual.uv, np.float32)
    if uv is None or uv.shape != (count, 2):
        notes.append(f"texture of {name!r} ignored: the mesh has no texture coordinates")
        return result
    if not np.isfinite(uv).all():
        notes.append(f"texture of {name!r} ignored: non-finite texture coordinates")
        return result
    texture = _texture_array(image, name, notes, cache)
    if texture is None:
        return result
    if alpha_cutoff > 0 and rgba[3] < 1:  # the factor's alpha scales the texture's alpha before the cutoff test
        texture = texture.copy()
        texture[..., 3] = np.round(texture[..., 3] * rgba[3]).astype(np.uint8)
    result.uvs, result.texture = uv, texture
    return result


def _texture_array(image: Image.Image, name: str, notes: list[str], cache: dict[int, np.ndarray]
                   ) -> np.ndarray | None:
    """[H, W, 4] uint8 RGBA of a PIL image, downscaled to MAX_TEXTURE_SIZE; None (with a note) if unreadable."""
    if id(image) in cache:
        return cache[id(image)]
    try:
        rgba = image.convert("RGBA")
        if max(rgba.size) > MAX_TEXTURE_SIZE:
            scale = MAX_TEXTURE_SIZE / max(rgba.size)
            size = (max(1, round(rgba.size[0] * scale)), max(1, round(rgba.size[1] * scale)))
            notes.append(f"texture of {name!r} downscaled from {rgba.size[0]}x{rgba.size[1]} to {size[0]}x{size[1]}")
            rgba = rgba.resize(size, Image.Resampling.LANCZOS)
        array = np.ascontiguousarray(np.asarray(rgba, np.uint8))
    except Exception as exc:  # truncated or exotic image data: the surface keeps its colour factor
        notes.append(f"texture of {name!r} unreadable ({type(exc).__name__}: {exc}); colour factor used")
        return None
    cache[id(image)] = array
    return array


def _rgb(colors: np.ndarray, count: int) -> np.ndarray:
    """[V, 3] float32 in [0, 1] from [V, 3|4] uint8 or float colours."""
    colors = np.asarray(colors)
    if colors.ndim != 2 or len(colors) != count or colors.shape[1] < 3:
        return np.tile(np.float32(DEFAULT_COLOR), (count, 1))
    rgb = colors[:, :3].astype(np.float32)
    return rgb / 255.0 if np.issubdtype(colors.dtype, np.integer) else np.clip(rgb, 0.0, 1.0)
