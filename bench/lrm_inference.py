"""LRM inference benchmark (random weights): encode, one view, a turntable, mesh extraction, peak memory.

Examples:
    python bench/lrm_inference.py --preset tiny
    python bench/lrm_inference.py --preset paper --turntable-measure 2 --mesh-res 256
On a slow CPU, ``--turntable-measure K`` renders K of the turntable's views and extrapolates to all.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import time
from collections.abc import Callable

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch (see vfusion3d_core/__init__.py)
import torch  # noqa: E402

from vfusion3d_core.cameras import default_source_camera, turntable_cameras
from vfusion3d_core.lrm import LRM, get_preset
from vfusion3d_core.lrm.generate import pick_device, render_turntable
from vfusion3d_core.lrm.mesh import EmptyMeshError, density_grid, marching_cubes, vertex_colours

PARTS = ("encode", "view", "turntable", "mesh")


def peak_memory_mib(device: torch.device) -> float:
    """Peak GPU allocation since the last reset, or the process's peak RSS on CPU (MiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable, device: torch.device):
    """(result, seconds, peak MiB) of one call, synchronising the GPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - start, peak_memory_mib(device)


@torch.no_grad()
def stretch_density(model: LRM, planes: torch.Tensor) -> None:
    """Random weights give a nearly constant density below the mesh level; scale the density output
    so that its median over the box is exactly 1 and the mesh benchmark extracts a real surface."""
    last = model.decoder.layers[-1]
    points = torch.rand(1, 8192, 3, generator=torch.Generator().manual_seed(0)).to(planes.device) * 2 - 1
    last.weight[0] *= 40
    last.bias[0] = 0
    raw, _ = model.query_raw(planes, points)
    last.bias[0] = 1 + math.log(math.e - 1) - raw.median()


def report(name: str, seconds: float, mem: float, note: str = "") -> None:
    """One line of the results table."""
    print(f"{name:<28}{seconds:>10.3f} s{mem:>12.0f} MiB  {note}", flush=True)


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", choices=["tiny", "small", "paper"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--render-size", type=int, default=384)
    parser.add_argument("--turntable-views", type=int, default=160)
    parser.add_argument("--turntable-size", type=int, default=None, help="default: --render-size")
    parser.add_argument("--turntable-measure", type=int, default=None, help="render only K views, extrapolate")
    parser.add_argument("--mesh-res", type=int, nargs="*", default=[256, 512])
    parser.add_argument("--chunk-rays", type=int, default=8192)
    parser.add_argument("--chunk-points", type=int, default=1 << 18)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma list from {PARTS}")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    config = get_preset(args.preset)
    model, build_s, mem = timed(lambda: LRM(config).to(device=device, dtype=dtype).eval(), device)
    params = sum(p.numel() for p in model.parameters())
    print(f"preset={args.preset} params={params / 1e6:.1f}M device={device} dtype={args.dtype} "
          f"threads={torch.get_num_threads()} source={config.source_size}px samples/ray="
          f"{config.rendering_samples_per_ray} planes={config.triplane_dim}x{config.triplane_high_res}^2")
    report("build (random init)", build_s, mem)

    image = torch.rand(1, 3, config.source_size, config.source_size, device=device, dtype=dtype)
    source = default_source_camera()[None].to(device=device, dtype=dtype)
    planes = model.encode(image, source)  # warm-up
    if "encode" in parts:
        planes, sec, mem = timed(lambda: model.encode(image, source), device)
        report("encode", sec, mem, f"planes {tuple(planes.shape)}")
    if "view" in parts:
        cams = turntable_cameras(1).render_vectors()[None].to(device)
        _, sec, mem = timed(lambda: model.render(planes, cams, args.render_size, chunk_rays=args.chunk_rays),
                            device)
        report(f"render 1 view {args.render_size}^2", sec, mem)
    if "turntable" in parts:
        size = args.turntable_size or args.render_size
        k = min(args.turntable_measure or args.turntable_views, args.turntable_views)
        _, sec, mem = timed(lambda: render_turntable(model, planes, size, k, args.chunk_rays), device)
        note = "" if k == args.turntable_views else f"(measured {k} views: {sec:.2f} s, extrapolated)"
        report(f"turntable {args.turntable_views} x {size}^2", sec * args.turntable_views / k, mem, note)
    if "mesh" in parts:
        stretch_density(model, planes)
        for res in args.mesh_res:
            def density(p):
                return model.query_density(planes, p[None].to(dtype))[0][0, :, 0]
            grid, sec_grid, mem = timed(lambda r=res: density_grid(density, r, args.chunk_points, device), device)
            try:
                (verts, faces), sec_mc, _ = timed(lambda g=grid: marching_cubes(g, 1.0), device)
                colours, sec_col, mem = timed(lambda v=verts: vertex_colours(
                    lambda p: model.query_density(planes, p[None].to(dtype))[1][0], v, args.chunk_points, device),
                    device)
                note = (f"grid {sec_grid:.2f} s + marching cubes {sec_mc:.2f} s + colours {sec_col:.2f} s; "
                        f"{len(verts)} verts, {len(faces)} faces")
                report(f"mesh {res}^3", sec_grid + sec_mc + sec_col, mem, note)
            except EmptyMeshError as err:
                report(f"mesh {res}^3 (grid only)", sec_grid, mem, str(err))
            del grid
    print(f"peak memory (process RSS / GPU max allocated): {peak_memory_mib(device):.0f} MiB")


if __name__ == "__main__":
    main()
