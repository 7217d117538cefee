"""Image -> 3D: load a checkpoint, encode each image from the default source camera, write a mesh
(optionally decimated and/or with a baked texture), a turntable video (optional) and the preprocessed input."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import trimesh
from tqdm.auto import tqdm

from vfusion3d_core.cameras import default_source_camera, turntable_cameras
from vfusion3d_core.compute import ComputeSettings

from .checkpoint import read_weight_file
from .config import ConfigError, LRMConfig, read_json
from .inference import InferenceOptions
from .mesh import EmptyMeshError, extract_mesh, mesh_fields
from .mesh_export import MESH_FORMATS, UP_AXES, export_mesh
from .mesh_simplify import decimate
from .model import LRM
from .preprocess import DEFAULT_MAX_PIXELS, prepare_image
from .presets import get_preset
from .texture_bake import bake_texture
from .turntable import write_video


@dataclass
class GenerateOptions:
    """Output settings of ``generate``; ``render_size`` None means the model config's default.

    ``inference``: the fast path by default; ``InferenceOptions.exact()`` is the reference fp32 path
    (``--exact``). ``chunk_rays`` / ``chunk_points`` None: sized from ``inference.max_memory_gb``.
    ``video`` False: no turntable. ``max_faces``: decimate the mesh to that many faces at most (None:
    as extracted). ``texture_size`` > 0: xatlas uvs and a baked texture of that size instead of vertex
    colours (.glb / .obj). ``up_axis``: of .obj / .ply files ("y" like Blender's OBJ importer, or the
    world's "z"); a .glb is always y-up. Invalid combinations raise ValueError here.
    """

    render_size: int | None = None
    video: bool = True
    num_views: int = 160
    mesh_resolution: int = 256
    mesh_format: str = "glb"
    mesh_level: float = 1.0
    max_faces: int | None = None
    texture_size: int = 0
    up_axis: str = "y"
    video_format: str = "auto"
    fps: int = 30
    border_ratio: float = 0.15
    remove_background: str = "auto"
    max_pixels: int = DEFAULT_MAX_PIXELS
    chunk_rays: int | None = None
    chunk_points: int | None = None
    inference: InferenceOptions = field(default_factory=InferenceOptions)

    def __post_init__(self) -> None:
        if self.mesh_format not in MESH_FORMATS:
            raise ValueError(f"unknown mesh format {self.mesh_format!r}; use one of {MESH_FORMATS}")
        if self.up_axis not in UP_AXES:
            raise ValueError(f"unknown up axis {self.up_axis!r}; use one of {UP_AXES}")
        if self.mesh_format == "glb" and self.up_axis != "y":
            raise ValueError("a .glb is always y-up (glTF specification); up axis 'z' only applies to .obj / .ply")
        if self.max_faces is not None and self.max_faces < 1:
            raise ValueError(f"max_faces must be >= 1, got {self.max_faces}")
        if self.texture_size < 0 or 0 < self.texture_size < 8:
            raise ValueError(f"texture size must be 0 (vertex colours) or >= 8, got {self.texture_size}")
        if self.texture_size and self.mesh_format == "ply":
            raise ValueError("a baked texture needs mesh format glb or obj (.ply has no texture)")


def inference_options(compute: ComputeSettings, exact: bool = False, max_memory_gb: float = 4.0
                      ) -> InferenceOptions:
    """The inference options of ``vfusion3d generate --precision P [--exact]``: ``exact`` is the fp32
    reference path; otherwise the fast path with the encoder and the rendering field in ``compute``'s
    precision (auto: bf16 where native on the device; bf16; fp32). Meshing stays fp32."""
    if exact:
        if compute.precision == "bf16":
            raise ValueError("the exact path is fp32; it cannot run with precision bf16")
        return InferenceOptions.exact(max_memory_gb)
    dtype = {"auto": "auto", "bf16": "bfloat16", "fp32": "float32"}[compute.precision]
    return InferenceOptions(dtype=dtype, field_dtype=dtype, max_memory_gb=max_memory_gb)


def load_official_config(path: str | Path | None, preset: str = "paper") -> LRMConfig:
    """Config for a released weight file: a JSON of the released model kwargs (flat, or under
    'model'; optional 'dino_config' and 'source_size'), or the named preset when ``path`` is None.

    ConfigError naming the file on invalid JSON (with the position), unknown keys or invalid values."""
    if path is None:
        return get_preset(preset)
    data = read_json(path)
    try:
        if not isinstance(data, dict):
            raise ConfigError(f"expected a JSON object of model kwargs, got {type(data).__name__}")
        model = data.get("model", data)
        if not isinstance(model, dict):
            raise ConfigError(f"'model' must be a JSON object of model kwargs, got {type(model).__name__}")
        kwargs = dict(model)
        dino = kwargs.pop("dino_config", data.get("dino_config"))
        if "source_size" in data:  # a top-level source_size wins over the model kwargs
            kwargs["source_size"] = data["source_size"]
        return LRMConfig.from_official_kwargs(kwargs, dino)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


def load_model(checkpoint: str | Path | None = None, official: str | Path | None = None,
               official_config: str | Path | None = None, device: torch.device | str = "cpu") -> LRM:
    """Our checkpoint directory, or a released weight file (+ optional kwargs JSON; default paper).

    Every failure (config, missing/mis-shaped/non-finite tensors) names the file it comes from."""
    if (checkpoint is None) == (official is None):
        raise ValueError("give exactly one of a checkpoint directory or an official weight file")
    if checkpoint is not None:
        return LRM.from_pretrained(checkpoint, device)
    config = load_official_config(official_config)
    return LRM.from_state_dict(config, read_weight_file(official), device, official=True, source=Path(official))


@torch.no_grad()
def render_turntable(model: LRM, planes: torch.Tensor, size: int, num_views: int, chunk_rays: int | None = None,
                     progress: Callable | None = None, options: InferenceOptions | None = None) -> np.ndarray:
    """planes [1, 3, C, H, W] -> uint8 frames [V, size, size, 3] of the default turntable, one view per call
    (``options`` None: the exact renderer with ``chunk_rays`` default 4096)."""
    cams = turntable_cameras(num_views).render_vectors().to(planes.device)  # [V, 25]
    frames = []
    for v in range(num_views):
        out = model.render(planes, cams[v][None, None], size, deterministic=True, chunk_rays=chunk_rays,
                           options=options)
        frames.append((out["rgb"][0, 0].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8))
        if progress is not None:
            progress()
    return np.stack(frames)


@torch.no_grad()
def generate_one(model: LRM, image_path: str | Path, outdir: str | Path, opts: GenerateOptions,
                 log: Callable[[str], None] = print, progress_bar: bool = True) -> dict[str, Path]:
    """Write ``input.png``, ``mesh.<fmt>`` (plus ``mesh.mtl`` and its texture for a textured .obj) and,
    unless ``opts.video`` is False, ``turntable.<mp4|gif>`` for one image into ``outdir``.

    The image is preprocessed before anything is created (a refused image leaves no folder behind); the
    outputs are written into a temporary sibling folder and moved into ``outdir`` only once all are
    written, so a failure part-way leaves neither an empty nor a half-written ``outdir``."""
    device = next(model.parameters()).device
    out = Path(outdir)
    prepared = prepare_image(image_path, model.config.source_size, opts.border_ratio, opts.remove_background,
                             opts.max_pixels)
    log(f"{image_path}: foreground from {prepared.mask_source}")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        written = {"input": staging / "input.png"}
        prepared.to_pil().save(written["input"])
        image = prepared.image[None].to(device)  # [1, 3, S, S]
        source = default_source_camera()[None].to(device)  # [1, 16]
        planes = model.encode(image, source, opts.inference)
        if opts.video:
            size = opts.render_size or model.config.render_size
            with tqdm(total=opts.num_views, desc=f"turntable {Path(image_path).name}", unit="view",
                      disable=not progress_bar, leave=False) as bar:
                frames = render_turntable(model, planes, size, opts.num_views, opts.chunk_rays, bar.update,
                                          opts.inference)
            written["video"] = write_video(frames, staging / "turntable", opts.fps, opts.video_format)
        try:
            mesh = extract_mesh(model, planes, opts.mesh_resolution, opts.mesh_level, opts.chunk_points,
                                options=opts.inference)
        except EmptyMeshError as err:
            log(f"{image_path}: no mesh written: {err}")
        else:
            mesh = finish_mesh(model, planes, mesh, opts, log=lambda m: log(f"{image_path}: {m}"))
            files = export_mesh(mesh, staging / f"mesh.{opts.mesh_format}", opts.up_axis)
            written["mesh"] = files[0]
            written.update({f"mesh:{path.name}": path for path in files[1:]})  # .mtl and texture of an .obj
        return publish(staging, out, written)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def finish_mesh(model: LRM, planes: torch.Tensor, mesh: trimesh.Trimesh, opts: GenerateOptions,
                log: Callable[[str], None] = print) -> trimesh.Trimesh:
    """The extracted mesh (world z-up, vertex colours) decimated to ``opts.max_faces`` and/or given a
    baked texture of ``opts.texture_size``, both coloured from the model's colour field at the new points."""
    if opts.max_faces is None and not opts.texture_size:
        return mesh
    _, colour, chunk_points = mesh_fields(model, planes, opts.inference, opts.chunk_points)
    if opts.max_faces is not None and len(mesh.faces) > opts.max_faces:
        before = len(mesh.faces)
        mesh = decimate(mesh, opts.max_faces, colour, chunk_points, planes.device)
        log(f"mesh decimated from {before} to {len(mesh.faces)} faces")
    if opts.texture_size:
        mesh = bake_texture(mesh, opts.texture_size, colour, chunk_points=chunk_points, device=planes.device)
        log(f"texture baked ({opts.texture_size} x {opts.texture_size})")
    return mesh


def publish(staging: Path, out: Path, written: dict[str, Path]) -> dict[str, Path]:
    """Move the files of ``staging`` into ``out``: a rename of the whole folder when ``out`` does not exist,
    else one ``replace`` per file (earlier outputs of the same names are overwritten, other files kept)."""
    if not out.exists():
        staging.rename(out)
    else:
        for path in written.values():
            path.replace(out / path.name)
    return {key: out / path.name for key, path in written.items()}


def output_dirs(images: list[Path], root: Path) -> list[Path]:
    """One output folder per image, named by file stem, de-duplicated with a numeric suffix."""
    seen: dict[str, int] = {}
    dirs = []
    for path in images:
        stem = path.stem
        seen[stem] = seen.get(stem, 0) + 1
        dirs.append(root / (stem if seen[stem] == 1 else f"{stem}_{seen[stem]}"))
    return dirs
