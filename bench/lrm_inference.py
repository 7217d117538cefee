"""LRM inference benchmark (random weights): the exact fp32 path against the fast path.

Prints, for the chosen preset and device, encode + transformer, one view, a large view, a
turntable, mesh extraction at each --mesh-res, and image -> mesh end to end, each with its
time, peak memory, the fast/exact ratio, the fast path's deviation from the exact one and the
targets (docs/lrm.md, "Benchmark"). Every (part, mode) runs in its own subprocess, so each peak memory figure
(process peak RSS on CPU, max allocated on GPU) belongs to that part alone; each subprocess builds
the same seeded random model.

Scenes (see vfusion3d_core/lrm/testing.py): render and mesh parts use ``object_planes`` — planes
whose field through the random decoder is one blobby object with a sharp surface and empty space
around it, as a trained model's would be. ``view-sponge`` renders the encoded planes of the random
model with a dense 15% (``give_surface``): an iso-surface of walls and tubes spanning the box, the
worst case for empty-space skipping and for the bf16 field; ``view-fog`` the unshaped random
field (uniform fog, nothing to skip).

Examples:
    python bench/lrm_inference.py --preset tiny
    nice -n 10 python bench/lrm_inference.py --preset paper --turntable-measure 4 \\
        --out bench/results/lrm_inference_paper_cpu.txt
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch (see vfusion3d_core/__init__.py)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # measure this checkout, not an installed copy
import numpy as np  # noqa: E402
import torch  # noqa: E402

from vfusion3d_core.cameras import default_source_camera, turntable_cameras  # noqa: E402
from vfusion3d_core.compute import resolve_device  # noqa: E402
from vfusion3d_core.lrm import LRM, get_preset  # noqa: E402
from vfusion3d_core.lrm.generate import render_turntable  # noqa: E402
from vfusion3d_core.lrm.inference import InferenceOptions, fast_bf16  # noqa: E402
from vfusion3d_core.lrm.mesh import extract_mesh  # noqa: E402
from vfusion3d_core.lrm.testing import give_surface, object_planes  # noqa: E402

PARTS = ("encode", "view", "view-sponge", "view-fog", "large", "turntable", "mesh", "mesh-large")
GIB = 1 << 30
TARGETS = {  # the targets of docs/lrm.md ("Benchmark"), on the 2-core CPU
    "encode": 4.0, "view": 1.5, "mesh": 5.0, "memory_gb": 4.0, "chamfer_voxels": 0.5, "gpu_e2e": 1.0,
}


# ------------------------------------------------------------------------------------------- worker
def peak_bytes(device: torch.device) -> int:
    """Peak GPU allocation since the last reset, or this process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn: Callable, device: torch.device, repeat: int):
    """(result of the last call, min seconds over ``repeat`` calls)."""
    times, out = [], None
    for _ in range(repeat):
        sync(device)
        start = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return out, min(times)


def image_error(a: torch.Tensor, b: torch.Tensor) -> dict:
    """max / mean abs difference, PSNR (dB, peak 1) and the share of pixels off by more than 1/255."""
    diff = (a.float() - b.float()).abs()
    mse = float((diff ** 2).mean())
    return {"max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
            "psnr": float("inf") if mse == 0 else -10 * float(np.log10(mse)),
            "off_1_255": float((diff.amax(dim=-3) > 1 / 255).float().mean())}


def chamfer_voxels(a: np.ndarray, b: np.ndarray, resolution: int) -> dict:
    """Symmetric mean and max nearest-vertex distance between two vertex sets, in voxels."""
    from scipy.spatial import cKDTree

    voxel = 2 / (resolution - 1)
    da, _ = cKDTree(b).query(a)
    db, _ = cKDTree(a).query(b)
    return {"chamfer_mean": float((da.mean() + db.mean()) / 2 / voxel),
            "hausdorff": float(max(da.max(), db.max()) / voxel)}


@torch.no_grad()
def worker(part: str, mode: str, res: int, args: argparse.Namespace, tmp: Path) -> dict:
    """One (part, mode) in this process; returns its metrics (also the files later parts compare to)."""
    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = LRM(get_preset(args.preset)).to(device).eval()
    config = model.config
    base = peak_bytes(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    options = None if mode == "exact" else InferenceOptions(max_memory_gb=args.max_memory_gb)
    if mode == "fast32":  # the fast path with an fp32 field: same skipping, no bf16 rounding
        options = options.replace(field_dtype="float32")
    out: dict = {"base_bytes": base}
    if part == "encode":
        image = torch.rand(1, 3, config.source_size, config.source_size, generator=torch.Generator().manual_seed(0))
        image, source = image.to(device), default_source_camera()[None].to(device)
        model.encode(image, source, options)  # warm-up (kernel selection, autocast weight casts)
        planes, out["seconds"] = best_time(lambda: model.encode(image, source, options), device, args.repeat)
        torch.save(planes.cpu(), tmp / f"planes_{mode}.pt")
        if mode == "fast":
            ref = torch.load(tmp / "planes_exact.pt").to(device)
            out["planes_max_abs"] = float((planes - ref).abs().max() / ref.abs().max())
            out["planes_rel_l2"] = float((planes - ref).norm() / ref.norm())
    else:
        if part in ("view-sponge", "view-fog"):
            planes = torch.load(tmp / "planes_exact.pt").to(device)
            if part == "view-sponge":
                give_surface(model, planes)
        elif config.triplane_dim >= config.decoder_hidden_dim:
            planes = object_planes(model)
            give_surface(model, planes, shell=0.05)
        else:  # object_planes cannot steer a decoder wider than the planes (tiny): the sponge instead
            planes = torch.load(tmp / "planes_exact.pt")[:1].to(device)
            give_surface(model, planes)
        if part in ("view", "view-sponge", "view-fog", "large"):
            size = args.view_size if part != "large" else args.large_size
            cams = turntable_cameras(1).render_vectors()[None].to(device)
            model.render(planes, cams, 16, options=options)  # warm-up
            stats: dict = {}
            render, out["seconds"] = best_time(
                lambda: model.render(planes, cams, size, options=options, stats=stats), device, args.repeat)
            out["evaluated"] = stats["evaluated"] / stats["samples"]
            rgb = render["rgb"].cpu()
            torch.save(rgb, tmp / f"{part}_{mode}.pt")
            if mode != "exact" and (tmp / f"{part}_exact.pt").exists():
                out.update(image_error(rgb, torch.load(tmp / f"{part}_exact.pt")))
        elif part == "turntable":
            k = min(args.turntable_measure or args.turntable_views, args.turntable_views)
            _, sec = best_time(lambda: render_turntable(model, planes, args.large_size, k, options=options), device, 1)
            out.update(seconds=sec * args.turntable_views / k, measured_views=k, measured_seconds=sec)
        elif part in ("mesh", "mesh-large"):
            stats = {}
            mesh, out["seconds"] = best_time(
                lambda: extract_mesh(model, planes, res, options=options, stats=stats), device, 1)
            out.update(evaluated=stats["evaluated"] / stats["vertices"], faces=len(mesh.faces),
                       vertices=len(mesh.vertices), grid_seconds=stats["grid_seconds"],
                       mc_seconds=stats["marching_seconds"], colour_seconds=stats["colour_seconds"])
            verts = np.asarray(mesh.vertices, dtype=np.float32)
            np.save(tmp / f"mesh{res}_{mode}.npy", verts)
            ref = tmp / f"mesh{res}_exact.npy"
            if mode == "fast" and ref.exists():
                out.update(chamfer_voxels(verts, np.load(ref), res))
    out["peak_bytes"] = peak_bytes(device)
    return out


# ------------------------------------------------------------------------------------- orchestrator
def run_worker(part: str, mode: str, res: int, argv: list[str], tmp: Path) -> dict:
    """Run one (part, mode) in a subprocess and return its metrics."""
    cmd = [sys.executable, __file__, *argv, "--worker", f"{part}:{mode}:{res}", "--tmp", str(tmp)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"worker {part}:{mode} failed with exit code {result.returncode}")
    return json.loads((tmp / f"{part}_{mode}_{res}.json").read_text())


def fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def fmt_gb(value: int | None) -> str:
    return "-" if value is None else f"{value / GIB:.2f} GB"


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def image_note(metrics: dict) -> str:
    if "max_abs" not in metrics:
        return ""
    return (f" max abs {metrics['max_abs']:.4f}, mean abs {metrics['mean_abs']:.2e}, PSNR {metrics['psnr']:.1f} dB, "
            f"{100 * metrics['off_1_255']:.2f}% pixels off > 1/255;")


def memory_target(metrics: dict) -> str:
    ok = metrics["peak_bytes"] <= TARGETS["memory_gb"] * GIB
    return f"peak <= {TARGETS['memory_gb']:g} GB: {verdict(ok)}"


class Table:
    """Collects the printed lines (and writes them to --out)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)

    def row(self, name: str, exact: dict | None, fast: dict | None, target: str = "", note: str = "") -> None:
        e, f = (exact or {}).get("seconds"), (fast or {}).get("seconds")
        ratio = f"{e / f:6.1f}x" if e and f else "      -"
        self(f"{name:<26}{fmt_s(e):>11}{fmt_s(f):>11}{ratio:>9}  {fmt_gb((exact or {}).get('peak_bytes')):>8}"
             f"{fmt_gb((fast or {}).get('peak_bytes')):>9}  {target}{('  ' + note) if note else ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", choices=["tiny", "small", "paper"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--view-size", type=int, default=128)
    parser.add_argument("--large-size", type=int, default=384, help="large view and turntable resolution")
    parser.add_argument("--turntable-views", type=int, default=160)
    parser.add_argument("--turntable-measure", type=int, default=None, help="render only K views, extrapolate time")
    parser.add_argument("--mesh-res", type=int, nargs="*", default=[256, 512])
    parser.add_argument("--exact-mesh-max", type=int, default=256, help="largest resolution also meshed exactly")
    parser.add_argument("--max-memory-gb", type=float, default=4.0)
    parser.add_argument("--repeat", type=int, default=1, help="timed repetitions (min is reported)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma list from {PARTS}")
    parser.add_argument("--skip-exact", default="turntable", help="comma list of parts not run exactly")
    parser.add_argument("--no-fp32-field", action="store_true", help="skip the view with an fp32 fast field")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--tmp", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        part, mode, res = args.worker.split(":")
        metrics = worker(part, mode, int(res), args, args.tmp)
        (args.tmp / f"{part}_{mode}_{res}.json").write_text(json.dumps(metrics))
        return
    argv = [a for a in sys.argv[1:]]
    parts = args.parts.split(",")
    skip_exact = set(args.skip_exact.split(",")) if args.skip_exact else set()
    device = resolve_device(args.device)
    config = get_preset(args.preset)
    out = Table()
    dtype = InferenceOptions().compute_dtype(device)
    cpu = "cuda " + torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"cpu {os.cpu_count()} cores, {torch.backends.cpu.get_cpu_capability()}, "
        f"fast bf16={'yes' if fast_bf16(device) else 'no'}")
    out(f"# bench/lrm_inference.py --preset {args.preset}   device={device} ({cpu}) threads={torch.get_num_threads()}")
    out(f"# torch {torch.__version__}; fast path: {dtype}, fused field, skip weight_eps="
        f"{InferenceOptions().weight_eps:g}, mesh stride {InferenceOptions().mesh_stride}; "
        f"max_memory_gb={args.max_memory_gb}; load average at start {os.getloadavg()[0]:.2f}")
    if args.preset != "paper":
        out("# the targets are for --preset paper; at other presets the verdicts are informative only")
    if config.triplane_dim < config.decoder_hidden_dim:
        out("# planes narrower than the decoder: render/mesh parts use the sponge scene, not object_planes")
    out(f"# source {config.source_size}px, {config.rendering_samples_per_ray} samples/ray, planes "
        f"{config.triplane_dim}x{config.triplane_high_res}^2; peak = whole process (model included), "
        f"each (part, mode) in its own process")
    out(f"{'part':<26}{'exact':>11}{'fast':>11}{'ratio':>9}  {'peak ex':>8}{'peak fast':>9}  target")
    with tempfile.TemporaryDirectory(prefix="lrm_bench_") as tmp_dir:
        tmp = Path(tmp_dir)

        def pair(part: str, res: int = 0, exact: bool = True) -> tuple[dict | None, dict]:
            e = run_worker(part, "exact", res, argv, tmp) if exact and part not in skip_exact else None
            return e, run_worker(part, "fast", res, argv, tmp)

        e_enc, f_enc = pair("encode", exact=True)  # always: the later parts use the exact planes
        if "encode" in parts:
            out.row("encode + transformer", e_enc, f_enc, f"<= {TARGETS['encode']:g} s: "
                    f"{verdict(f_enc['seconds'] <= TARGETS['encode'])}")
            out(f"{'':<4}planes fast vs exact: max abs {f_enc['planes_max_abs']:.2e} of max |plane|, "
                f"relative L2 {f_enc['planes_rel_l2']:.2e}")
        for part, size in (("view", args.view_size), ("view-sponge", args.view_size), ("view-fog", args.view_size),
                           ("large", args.large_size)):
            if part not in parts:
                continue
            e, f = pair(part)
            target = ""
            if part == "view":
                target = f"<= {TARGETS['view']:g} s: {verdict(f['seconds'] <= TARGETS['view'])}"
            elif part == "large":
                target = memory_target(f)
            label = {"view": "view", "view-sponge": "sponge view", "view-fog": "fog view", "large": "view"}[part]
            out.row(f"{label} {size}^2", e, f, target)
            out(f"{'':<4}fast vs exact:{image_note(f)} evaluated {100 * f['evaluated']:.1f}% of the samples")
            if part == "view" and not args.no_fp32_field:
                f32 = run_worker(part, "fast32", 0, argv, tmp)
                out.row("  same, fp32 field", e, f32)
                out(f"{'':<4}fast (fp32 field) vs exact:{image_note(f32)}")
        if "turntable" in parts:
            e, f = pair("turntable")
            note = "" if f["measured_views"] == args.turntable_views else (
                f"(time of {f['measured_views']} views, {f['measured_seconds']:.1f} s, extrapolated)")
            out.row(f"turntable {args.turntable_views}x{args.large_size}^2", e, f,
                    memory_target(f), note)
        mesh_fast = {}
        for res in args.mesh_res:
            part = "mesh" if res <= args.exact_mesh_max else "mesh-large"
            if part not in parts and "mesh" not in parts:
                continue
            e, f = pair(part, res, exact=res <= args.exact_mesh_max)
            mesh_fast[res] = f
            target = (f"<= {TARGETS['mesh']:g} s: {verdict(f['seconds'] <= TARGETS['mesh'])}" if res == 256 else
                      memory_target(f))
            out.row(f"mesh {res}^3 (grid+mc+colour)", e, f, target)
            for key, label in (("grid_seconds", "density grid"), ("mc_seconds", "marching cubes"),
                               ("colour_seconds", "vertex colours")):
                out.row(f"  {label}", {"seconds": e[key]} if e else None, {"seconds": f[key]},
                        f"<= {TARGETS['mesh']:g} s: {verdict(f[key] <= TARGETS['mesh'])}"
                        if key == "grid_seconds" and res == 256 else "")
            cham = (f" Chamfer {f['chamfer_mean']:.3f} voxel (<= {TARGETS['chamfer_voxels']}: "
                    f"{verdict(f['chamfer_mean'] <= TARGETS['chamfer_voxels'])}), Hausdorff {f['hausdorff']:.2f} voxel;"
                    if "chamfer_mean" in f else "")
            out(f"{'':<4}fast vs exact:{cham} density evaluated at {100 * f['evaluated']:.1f}% of the grid; "
                f"{f['faces']} faces")
        if "encode" in parts and 256 in mesh_fast:
            total = f_enc["seconds"] + mesh_fast[256]["seconds"]
            goal = f" (GPU goal < {TARGETS['gpu_e2e']:g} s: {verdict(total < TARGETS['gpu_e2e'])})" \
                if device.type == "cuda" else ""
            out(f"image -> mesh 256^3, fast: {total:.2f} s (encode + mesh){goal}")
    out(f"# load average at end {os.getloadavg()[0]:.2f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(out.lines) + "\n")


if __name__ == "__main__":
    main()
