"""`vfusion3d generate`: images -> meshes + turntable videos with an LRM checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import click

from vfusion3d_core.data.latest_ref import LatestRefError, default_artifact_root, is_latest_ref, resolve_latest

from .options import DEFAULT_MAX_PIXELS, MESH_FORMATS, UP_AXES, VIDEO_FORMATS  # light: no torch for --help

CHECKPOINT_SUBDIR = "model"  # where an LRM asset version keeps its checkpoint (the pipeline's MODEL_DIR)


def registered_checkpoint(uri: str) -> Path:
    """``models:/NAME/VERSION``, ``models:/NAME/latest`` or ``models:/NAME@ALIAS`` in $MLFLOW_TRACKING_URI (default:
    the sqlite store under $VFUSION3D_ARTIFACT_ROOT) -> the LRM folder: the committed artifact's ``model/`` folder
    when it is on this machine, else the registered LoggedModel's copy, downloaded into a temporary folder."""
    from vfusion3d_core.data.artifacts import default_tracking_uri
    from vfusion3d_core.data.audit_cli import model_version

    tracking = os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(default_artifact_root())
    mv = model_version(uri, tracking)
    committed = mv.tags.get("vfusion3d.artifact_path", "")
    if committed and (Path(committed) / CHECKPOINT_SUBDIR).is_dir():
        return Path(committed) / CHECKPOINT_SUBDIR
    import tempfile

    import mlflow

    from .pyfunc import lrm_folder

    return lrm_folder(mlflow.artifacts.download_artifacts(f"models:/{mv.name}/{mv.version}", tracking_uri=tracking,
                                                          dst_path=tempfile.mkdtemp(prefix="vfusion3d-model-")))


class CheckpointDir(click.Path):
    """A checkpoint directory, ``latest:ASSET`` for the current version of an LRM asset under
    $VFUSION3D_ARTIFACT_ROOT (default ./artifacts): its ``model/`` folder, or a registered model
    (``models:/NAME/VERSION``, ``models:/NAME/latest``, ``models:/NAME@ALIAS``; ``registered_checkpoint``)."""

    def __init__(self) -> None:
        super().__init__(exists=True, file_okay=False, path_type=Path)

    def convert(self, value, param, ctx):  # type: ignore[no-untyped-def]
        if isinstance(value, str) and is_latest_ref(value):
            try:
                version = resolve_latest(value)
            except LatestRefError as err:
                self.fail(str(err), param, ctx)
            value = str(version / CHECKPOINT_SUBDIR if (version / CHECKPOINT_SUBDIR).is_dir() else version)
        elif isinstance(value, str) and value.startswith("models:/"):
            try:
                value = str(registered_checkpoint(value))
            except click.ClickException as err:
                self.fail(err.format_message(), param, ctx)
        return super().convert(value, param, ctx)


@click.command("generate")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--checkpoint", type=CheckpointDir(),
              help="LRM checkpoint directory (config.json + model.safetensors), latest:ASSET for the current "
                   "version of an LRM asset under $VFUSION3D_ARTIFACT_ROOT (default ./artifacts), e.g. "
                   "latest:lrm_finetuned, or a registered model in $MLFLOW_TRACKING_URI (default: the sqlite store "
                   "there): models:/NAME/VERSION, models:/NAME/latest or models:/NAME@ALIAS, e.g. "
                   "models:/lrm_finetuned@champion.")
@click.option("--official", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Released VFusion3D weight file (.safetensors, or a torch state dict loaded weights_only).")
@click.option("--official-config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON with the released model kwargs for --official (default: the `paper` preset).")
@click.option("-o", "--output", "outdir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder; one sub-folder per image.")
@click.option("--render-size", type=int, default=None, help="Turntable resolution (default: model config).")
@click.option("--views", type=click.IntRange(1), default=160, show_default=True,
              help="Turntable frames (one render call each).")
@click.option("--no-video", is_flag=True, help="Write no turntable video (mesh and input.png only).")
@click.option("--mesh-resolution", type=click.IntRange(8), default=256, show_default=True,
              help="Marching-cubes grid size per axis (higher: finer mesh, slower).")
@click.option("--mesh-level", type=float, default=1.0, show_default=True, help="Density iso level.")
@click.option("--mesh-format", type=click.Choice(MESH_FORMATS), default="glb", show_default=True,
              help="File format of the mesh (glb keeps vertex colours or a baked texture).")
@click.option("--max-faces", type=click.IntRange(4), default=None,
              help="Decimate the mesh to at most N faces (quadric edge collapse); colours re-queried.")
@click.option("--texture-size", type=click.IntRange(0), default=0, show_default=True,
              help="N > 0: UV-unwrap (xatlas) and bake an N x N colour texture instead of vertex colours "
                   "(glb/obj; slow on big meshes, combine with --max-faces). 0: vertex colours.")
@click.option("--up-axis", type=click.Choice(UP_AXES), default="y", show_default=True,
              help="Up axis of .obj/.ply files: y (Blender's OBJ import default; world +Z -> +Y) or z (the "
                   "project's world frame). .glb is always y-up (glTF).")
@click.option("--video-format", type=click.Choice(VIDEO_FORMATS), default="auto", show_default=True,
              help="auto = mp4 when imageio-ffmpeg is installed, else gif.")
@click.option("--fps", type=click.IntRange(1), default=30, show_default=True,
              help="Frames per second of the turntable video.")
@click.option("--remove-background", type=click.Choice(["auto", "always", "never"]), default="auto",
              show_default=True,
              help="rembg for images without alpha. auto: when rembg and its model are available, else the whole "
                   "image; always: fail unless they are (pip install 'vfusion3d[rembg]'); never: skip it.")
@click.option("--border-ratio", type=click.FloatRange(0, 0.49), default=0.15, show_default=True,
              help="Empty margin on each side of the recentred object, as a fraction of the model input size.")
@click.option("--max-pixels", type=click.IntRange(1), default=DEFAULT_MAX_PIXELS, show_default=True,
              help="Refuse larger images (decompression-bomb guard).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, ...")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp32"]), default="auto", show_default=True,
              help="auto: bf16 where native (CUDA tensor cores, AVX512-BF16/AMX CPUs), else fp32.")
@click.option("--exact", is_flag=True,
              help="Reference fp32 path: no bf16, no empty-space skipping, dense mesh grid (slower).")
@click.option("--max-memory-gb", type=click.FloatRange(0.5), default=4.0, show_default=True,
              help="Process memory bound used to size ray/point chunks.")
def generate(images: tuple[Path, ...], checkpoint: Path | None, official: Path | None,
             official_config: Path | None, outdir: Path, render_size: int | None, views: int, no_video: bool,
             mesh_resolution: int, mesh_level: float, mesh_format: str, max_faces: int | None, texture_size: int,
             up_axis: str, video_format: str, fps: int,
             remove_background: str, border_ratio: float, max_pixels: int, device: str, precision: str,
             exact: bool, max_memory_gb: float) -> None:
    """Reconstruct each IMAGE in 3D: writes input.png, mesh.<fmt> and turntable.<mp4|gif> (not with --no-video).

    Meshes: .glb is y-up (glTF), .obj/.ply are y-up too unless --up-axis z (the project's z-up world frame).

    By default the fast path runs (bf16 where the hardware has fast bf16, empty-space skipping,
    coarse-to-fine meshing); --exact runs the reference fp32 path.

    An image that cannot be used is reported by name with its reason and the others are still processed;
    the exit status is 1 when any image failed, after a summary line. Each image's outputs appear only once
    all are written (a refused or failed image leaves no folder)."""
    from tqdm.auto import tqdm

    from vfusion3d_core.compute import ComputeSettings, DeviceUnavailableError

    from .generate import GenerateOptions, generate_one, inference_options, load_model, output_dirs
    from .preprocess import ImageError, open_image, require_rembg

    if (checkpoint is None) == (official is None):
        raise click.UsageError("give exactly one of --checkpoint DIR or --official FILE")
    if official_config is not None and official is None:
        raise click.UsageError("--official-config only applies to --official")
    if exact and precision == "bf16":
        raise click.UsageError("--exact is the fp32 reference path; it cannot run with --precision bf16")
    if mesh_format == "glb" and up_axis != "y":
        raise click.UsageError("--up-axis z only applies to --mesh-format obj/ply; a .glb is always y-up (glTF)")
    if texture_size and mesh_format == "ply":
        raise click.UsageError("--texture-size needs --mesh-format glb or obj (.ply has no texture)")
    if 0 < texture_size < 8:
        raise click.UsageError("--texture-size must be 0 (vertex colours) or at least 8")
    if remove_background == "always":  # before any image is read or the model loaded: it would fail for all
        try:
            require_rembg()
        except ImageError as err:
            raise click.UsageError(str(err)) from err
    failed: dict[int, str] = {}  # position in IMAGES -> reason (the same file may be given twice)
    for index, path in enumerate(images):  # headers only: unreadable images are reported before loading a model
        try:
            open_image(path, max_pixels).close()
        except ImageError as err:
            failed[index] = str(err)
            click.echo(f"skipped {err}", err=True)
    if len(failed) == len(images):
        raise click.ClickException(batch_summary(images, failed))
    try:
        compute = ComputeSettings(device, precision)
        torch_device = compute.torch_device
    except (ValueError, DeviceUnavailableError) as err:
        raise click.UsageError(str(err)) from err
    try:
        model = load_model(checkpoint, official, official_config, torch_device)
    except (ValueError, OSError) as err:  # CheckpointMismatchError and ConfigError are ValueErrors
        raise click.ClickException(f"cannot load the model: {err}") from err
    opts = GenerateOptions(render_size=render_size, video=not no_video, num_views=views,
                           mesh_resolution=mesh_resolution, mesh_format=mesh_format, mesh_level=mesh_level,
                           max_faces=max_faces, texture_size=texture_size, up_axis=up_axis,
                           video_format=video_format, fps=fps,
                           border_ratio=border_ratio, remove_background=remove_background, max_pixels=max_pixels,
                           inference=inference_options(compute, exact, max_memory_gb))
    jobs = [(i, p, o) for i, (p, o) in enumerate(zip(images, output_dirs(list(images), outdir), strict=True))
            if i not in failed]
    for index, path, out in tqdm(jobs, desc="images", unit="image"):
        try:
            written = generate_one(model, path, out, opts, log=tqdm.write)
        except (ImageError, ValueError, RuntimeError, OSError) as err:  # one image's failure: report, go on
            message = str(err) if str(err).startswith(str(path)) else f"{path}: {err}"
            failed[index] = message
            tqdm.write(f"failed {message}")
            continue
        tqdm.write(f"{path} -> " + ", ".join(str(p) for p in written.values()))
    if failed:
        raise click.ClickException(batch_summary(images, failed))
    click.echo(batch_summary(images, failed))


def batch_summary(images: tuple[Path, ...], failed: dict[int, str]) -> str:
    """One line: how many images were processed, and each failed one (by position in ``images``) with its
    reason, which names the file."""
    line = f"{len(images) - len(failed)} of {len(images)} image(s) processed"
    if failed:
        line += f"; {len(failed)} failed: " + "; ".join(failed[i] for i in sorted(failed))
    return line
