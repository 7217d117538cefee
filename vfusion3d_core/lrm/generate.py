"""Image -> 3D: load a checkpoint, encode each image from the default source camera, write a mesh,
a turntable video and the preprocessed input."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from vfusion3d_core.cameras import default_source_camera, turntable_cameras
from vfusion3d_core.compute import ComputeSettings, resolve_device

from .checkpoint import WEIGHTS_NAME, read_weight_file
from .config import LRMConfig
from .convert import CheckpointMismatchError
from .inference import InferenceOptions
from .mesh import EmptyMeshError, extract_mesh, save_mesh
from .model import LRM
from .preprocess import DEFAULT_MAX_PIXELS, prepare_image
from .presets import get_preset
from .video import write_video


@dataclass
class GenerateOptions:
    """Output settings of ``generate``; ``render_size`` None means the model config's default.

    ``inference``: the fast path by default; ``InferenceOptions.exact()`` is the reference fp32 path
    (``--exact``). ``chunk_rays`` / ``chunk_points`` None: sized from ``inference.max_memory_gb``.
    """

    render_size: int | None = None
    num_views: int = 160
    mesh_resolution: int = 256
    mesh_format: str = "glb"
    mesh_level: float = 1.0
    video_format: str = "auto"
    fps: int = 30
    border_ratio: float = 0.15
    remove_background: str = "auto"
    max_pixels: int = DEFAULT_MAX_PIXELS
    chunk_rays: int | None = None
    chunk_points: int | None = None
    inference: InferenceOptions = field(default_factory=InferenceOptions)


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


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu (see ``vfusion3d_core.compute.resolve_device``)."""
    return resolve_device(name)


def load_official_config(path: str | Path | None, preset: str = "paper") -> LRMConfig:
    """Config for a released weight file: a JSON of the released model kwargs (flat, or under
    'model'; optional 'dino_config' and 'source_size'), or the named preset when ``path`` is None."""
    if path is None:
        return get_preset(preset)
    data = json.loads(Path(path).read_text())
    kwargs = data.get("model", data)
    dino = kwargs.get("dino_config", data.get("dino_config"))
    extra = {"source_size": data["source_size"]} if "source_size" in data else {}
    return LRMConfig.from_official_kwargs(kwargs, dino, **extra)


def load_model(checkpoint: str | Path | None = None, official: str | Path | None = None,
               official_config: str | Path | None = None, device: torch.device | str = "cpu") -> LRM:
    """Our checkpoint directory, or a released weight file (+ optional kwargs JSON; default paper)."""
    if (checkpoint is None) == (official is None):
        raise ValueError("give exactly one of a checkpoint directory or an official weight file")
    if checkpoint is not None:
        return refuse_non_finite(LRM.from_pretrained(checkpoint, device), Path(checkpoint) / WEIGHTS_NAME)
    config = load_official_config(official_config)
    return refuse_non_finite(LRM.from_state_dict(config, read_weight_file(official), device, official=True),
                             Path(official))


def refuse_non_finite(model: LRM, source: Path) -> LRM:
    """``model``, unless a weight loaded from ``source`` holds NaN/inf (CheckpointMismatchError naming the file:
    such a model renders garbage or NaN meshes)."""
    bad = [name for name, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise CheckpointMismatchError(f"{source} holds non-finite (NaN/inf) weights in {len(bad)} tensor(s), "
                                      f"e.g. {bad[:3]}; refusing to use it")
    return model


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
    """Write ``input.png``, ``mesh.<fmt>`` and ``turntable.<mp4|gif>`` for one image into ``outdir``."""
    device = next(model.parameters()).device
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    prepared = prepare_image(image_path, model.config.source_size, opts.border_ratio, opts.remove_background,
                             opts.max_pixels)
    log(f"{image_path}: foreground from {prepared.mask_source}")
    written = {"input": out / "input.png"}
    prepared.to_pil().save(written["input"])
    image = prepared.image[None].to(device)  # [1, 3, S, S]
    source = default_source_camera()[None].to(device)  # [1, 16]
    planes = model.encode(image, source, opts.inference)
    size = opts.render_size or model.config.render_size
    with tqdm(total=opts.num_views, desc=f"turntable {Path(image_path).name}", unit="view",
              disable=not progress_bar, leave=False) as bar:
        frames = render_turntable(model, planes, size, opts.num_views, opts.chunk_rays, bar.update, opts.inference)
    written["video"] = write_video(frames, out / "turntable", opts.fps, opts.video_format)
    try:
        mesh = extract_mesh(model, planes, opts.mesh_resolution, opts.mesh_level, opts.chunk_points,
                            options=opts.inference)
    except EmptyMeshError as err:
        log(f"{image_path}: no mesh written: {err}")
    else:
        written["mesh"] = save_mesh(mesh, out / f"mesh.{opts.mesh_format}")
    return written


def output_dirs(images: list[Path], root: Path) -> list[Path]:
    """One output folder per image, named by file stem, de-duplicated with a numeric suffix."""
    seen: dict[str, int] = {}
    dirs = []
    for path in images:
        stem = path.stem
        seen[stem] = seen.get(stem, 0) + 1
        dirs.append(root / (stem if seen[stem] == 1 else f"{stem}_{seen[stem]}"))
    return dirs
