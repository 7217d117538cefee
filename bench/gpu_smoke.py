"""GPU smoke check: a few steps of every device step at the `small` shapes with tiny random weights, then
image -> mesh at the released LRM config. Prints, per step, wall time, peak GPU memory and the device(s)
the weights ran on (every module's parameters are observed as it runs), and writes the table to ``--out``.

    python bench/gpu_smoke.py                       # CUDA, small shapes (< 8 minutes on one GPU)
    python bench/gpu_smoke.py --device cpu --micro  # micro shapes on the CPU (what tests/test_gpu_smoke.py runs)

Written to run unattended in one go: a failing step is reported with its error and the rest still run;
the exit status is 1 when any step failed or ran on another device than asked.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vfusion3d_core.cameras import orbit_cameras  # noqa: E402
from vfusion3d_core.compute import ComputeSettings  # noqa: E402
from vfusion3d_core.data.sample import MultiviewSample  # noqa: E402
from vfusion3d_core.data.shards import ShardWriter  # noqa: E402

VIEWS = 16


@dataclass
class Shapes:
    """Sizes of one smoke run: ``small`` (the preset's shapes, random weights) or ``micro`` (CPU test)."""

    name: str
    resolution: int  # render / video frame size
    objects: int
    video_overrides: dict = field(default_factory=dict)
    dino: dict = field(default_factory=dict)
    lrm_preset: str = "small"
    lrm_overrides: dict = field(default_factory=dict)
    eval_size: int = 128
    generate_preset: str = "paper"
    generate_views: int = 8
    mesh_resolution: int = 256


SMALL = Shapes("small", 256, 8,
               video_overrides=dict(vae_steps=3, image_steps=3, video_steps=3, sample_steps=3, video_batch=2,
                                    image_batch=4, vae_batch=4, checkpoint_every=1000),
               dino=dict(image_size=224, patch_size=14, hidden_size=768, num_layers=12, num_heads=12),
               lrm_overrides=dict(steps=3, batch_size=2, warmup_steps=1, checkpoint_every=1000, num_workers=0,
                                  lpips_random_backbone=True))
MICRO = Shapes("micro", 32, 4,
               video_overrides=dict(resolution=32, vae_channels=(8, 16), vae_norm_groups=4,
                                    image_unet_channels=(32, 32), video_unet_channels=(32, 32), attention_head_dim=8,
                                    time_embed_dim=8, vae_steps=2, image_steps=2, video_steps=2, sample_steps=2,
                                    video_batch=1, image_batch=2, vae_batch=2, checkpoint_every=1000),
               dino=dict(image_size=32, patch_size=8, hidden_size=32, num_layers=1, num_heads=2),
               lrm_preset="tiny",
               lrm_overrides=dict(steps=2, batch_size=1, warmup_steps=1, checkpoint_every=1000, num_workers=0,
                                  lpips_random_backbone=True),
               eval_size=32, generate_preset="tiny", generate_views=2, mesh_resolution=32)


# --- synthetic orbit data (no rasterizer needed on the GPU machine) -----------------------------------------
def orbit_sample(key: str, size: int, seed: int) -> MultiviewSample:
    """A shaded ellipsoid-like blob whose shading follows the orbit: uint8 RGBA [16, S, S, 4] + orbit cameras."""
    rng = np.random.default_rng(seed)
    colour = rng.uniform(0.2, 0.9, 3)
    cams = orbit_cameras(VIEWS, elevation_deg=float(rng.uniform(0, 45)))
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1) * 2 - 1
    views = np.zeros((VIEWS, size, size, 4), np.uint8)
    for i in range(VIEWS):
        a = 2 * np.pi * i / VIEWS
        rx, ry = 0.55 + 0.15 * np.cos(a), 0.6
        inside = (xx / rx) ** 2 + (yy / ry) ** 2 <= 1
        shade = np.clip(0.6 + 0.4 * (np.cos(a) * xx - yy) / 1.5, 0, 1)
        views[i, ..., :3] = (255 * shade[..., None] * colour).astype(np.uint8)
        views[i, ..., 3] = 255 * inside
    return MultiviewSample(key, f"a smooth blob number {seed}", views, cams.c2w.numpy(), cams.intrinsics.numpy(),
                           {"uid": key, "split": "train", "elevation_deg": float(cams.elevation_deg[0]),
                            "radius": float(cams.radius[0]), "num_views": VIEWS,
                            "azimuth_deg": cams.azimuth_deg.tolist()})


def write_orbits(directory: Path, count: int, size: int, seed: int) -> list[str]:
    with ShardWriter(directory, samples_per_shard=4) as writer:
        for i in range(count):
            writer.write(orbit_sample(f"obj{seed + i:05d}", size, seed + i))
    return [str(p) for p in writer.shards]


# --- measurement ---------------------------------------------------------------------------------------------
class WeightDevices:
    """Devices of the parameters of every module that runs a forward pass while installed."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self._handle = None

    def _hook(self, module: torch.nn.Module, _args: tuple) -> None:
        p = next(module.parameters(recurse=False), None)
        if p is not None:
            self.seen.add(str(p.device))

    def __enter__(self) -> WeightDevices:
        self._handle = torch.nn.modules.module.register_module_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()


@dataclass
class StepReport:
    name: str
    ok: bool
    seconds: float
    peak_gib: float | None
    weight_devices: list[str]
    detail: str


def measure(name: str, fn: Callable[[], str], device: torch.device) -> StepReport:
    """Run one step; time it (synchronized), its peak GPU memory and the devices its weights ran on."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    with WeightDevices() as seen:
        try:
            detail, ok = fn(), True
        except Exception as exc:  # unattended: report and go on with the next step
            detail, ok = f"FAILED: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=6)}", False
    if cuda:
        torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None
    report = StepReport(name, ok, time.perf_counter() - start, peak, sorted(seen.seen), detail)
    peak_text = f"{report.peak_gib:.2f} GiB" if peak is not None else "n/a (cpu)"
    print(f"[gpu_smoke] {name}: {'ok' if ok else 'FAILED'} in {report.seconds:.1f} s, peak {peak_text}, "
          f"weights on {report.weight_devices}", flush=True)
    return report


# --- the steps -----------------------------------------------------------------------------------------------
def run_steps(shapes: Shapes, compute: ComputeSettings, work: Path) -> list[StepReport]:
    from vfusion3d_core.filtering.extract import FilterRequest, run_filter
    from vfusion3d_core.filtering.features import DinoConfig, DinoFeaturizer
    from vfusion3d_core.filtering.models import Orbit, QualityTrainConfig, train_quality_models
    from vfusion3d_core.lrm.generate import GenerateOptions, generate_one
    from vfusion3d_core.lrm.model import LRM
    from vfusion3d_core.lrm.presets import get_preset
    from vfusion3d_core.lrm.train.config import LRMTrainConfig
    from vfusion3d_core.lrm.train.request import LRMTrainRequest, run_train_request
    from vfusion3d_core.metrics.evaluate import EvaluateRequest, run_evaluation
    from vfusion3d_core.prompts.shards import PromptRecord, write_prompt_shard
    from vfusion3d_core.video.config import VideoModelConfig
    from vfusion3d_core.video.finetune import finetune_video_model
    from vfusion3d_core.video.requests import FinetuneRequest, SynthesisRequest
    from vfusion3d_core.video.sampler import SampleSettings
    from vfusion3d_core.video.synthesis import run_synthesis

    device = compute.torch_device
    s = shapes.resolution
    train = write_orbits(work / "renders" / "train", shapes.objects, s, 0)
    heldout = write_orbits(work / "renders" / "heldout", 2, s, 1000)
    prompts = write_prompt_shard(work / "prompts.parquet", [PromptRecord(f"p{i}", p) for i, p in enumerate(
        ["a red teapot", "a blue chair"])])
    reports: list[StepReport] = []

    def video_finetune() -> str:
        cfg = VideoModelConfig.preset("small", **shapes.video_overrides)
        request = FinetuneRequest(cfg, train, str(work / "video_model"), preset="small", from_scratch=True,
                                  eval_count=1, compute=compute)
        result = finetune_video_model(request)
        return f"{result.counts}"

    def synthesis() -> str:
        request = SynthesisRequest(str(work / "video_model"), "0" * 64, str(prompts), "shard-000000",
                                   str(work / "synthetic"), SampleSettings("euler", 3, 4.0, (1.0, 2.5)),
                                   batch_size=2, compute=compute)
        return f"{run_synthesis(request).counts}"

    def quality_and_filter() -> str:
        from vfusion3d_core.data.shards import iter_samples
        from vfusion3d_core.video.data import composite_on_white

        featurizer = DinoFeaturizer.build(DinoConfig(**shapes.dino), compute)
        orbits = [Orbit(m.key, composite_on_white(m.views), float(m.meta["elevation_deg"]), float(m.meta["radius"]),
                        m.intrinsics[0]) for m in iter_samples(train)]
        models = train_quality_models(featurizer, orbits[: len(orbits) // 2], orbits[len(orbits) // 2:], [], [],
                                      QualityTrainConfig(mlp_iters=50), (0.0, 45.0))
        models.save(work / "quality")
        videos = sorted(str(p) for p in (work / "synthetic").glob("*.tar"))
        result, _ = run_filter(FilterRequest("shard-000000", videos, str(work / "quality"), str(work / "filtered"),
                                             min_keep_fraction=0.5, compute=compute))
        return f"{result.counts}"

    def lrm_train() -> str:
        recipe = LRMTrainConfig.preset(shapes.lrm_preset, **shapes.lrm_overrides)
        outcome = run_train_request(LRMTrainRequest(recipe, train, str(work / "lrm"), from_scratch=True,
                                                    compute=compute))
        return f"step {outcome.result.step}, final metrics {outcome.result.last_metrics}"

    def evaluate() -> str:
        request = EvaluateRequest({"untrained": None, "trained": str(work / "lrm" / "final")}, heldout,
                                  str(work / "eval"), untrained_config_from="trained", max_objects=2, novel_views=2,
                                  render_size=shapes.eval_size, turntable_frames=2, compute=compute)
        return json.dumps(run_evaluation(request).means, default=float)[:300]

    def generate_mesh() -> str:
        torch.manual_seed(0)
        model = LRM(get_preset(shapes.generate_preset)).to(device).eval()
        image = work / "input.png"
        from PIL import Image

        Image.fromarray(orbit_sample("input", 256, 7).views[0]).save(image)
        opts = GenerateOptions(num_views=shapes.generate_views, mesh_resolution=shapes.mesh_resolution,
                               video_format="gif", remove_background="never")
        out = generate_one(model, image, work / "generated", opts, log=lambda _m: None, progress_bar=False)
        return f"outputs {sorted(p.name for p in Path(work / 'generated').rglob('*') if p.is_file())} {out}"[:300]

    for name, fn in [("video fine-tune (vae+image+video stages)", video_finetune), ("synthesis", synthesis),
                     ("DINO featurize + quality models + filter", quality_and_filter), ("LRM train", lrm_train),
                     ("held-out eval (LPIPS/CLIP/PSNR/SSIM)", evaluate),
                     (f"image -> mesh ({shapes.generate_preset} config)", generate_mesh)]:
        reports.append(measure(name, fn, device))
    return reports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--precision", default="auto", help="auto | bf16 | fp32")
    parser.add_argument("--micro", action="store_true", help="micro shapes (CPU test) instead of the small preset's")
    parser.add_argument("--out", help="also write the report to this file")
    parser.add_argument("--work", help="work directory (default: a temporary one)")
    args = parser.parse_args(argv)
    compute = ComputeSettings(args.device, args.precision, gradient_checkpointing=True)
    shapes = MICRO if args.micro else SMALL
    described = compute.describe()
    header = [f"gpu_smoke: shapes={shapes.name} torch={torch.__version__} python={platform.python_version()}",
              f"compute: {json.dumps(described)}"]
    print("\n".join(header), flush=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        reports = run_steps(shapes, compute, work)
    expected = described["resolved_device"]
    lines = header + ["", f"{'step':45s} {'status':8s} {'seconds':>8s} {'peak GiB':>9s}  weights on"]
    bad = False
    for r in reports:
        wrong_device = any(not d.startswith(expected.split(":")[0]) for d in r.weight_devices)
        bad |= (not r.ok) or wrong_device or not r.weight_devices
        peak = f"{r.peak_gib:9.2f}" if r.peak_gib is not None else f"{'n/a':>9s}"
        status = "ok" if r.ok and not wrong_device and r.weight_devices else "FAILED"
        lines.append(f"{r.name:45s} {status:8s} {r.seconds:8.1f} {peak}  {', '.join(r.weight_devices) or '-'}")
    lines += ["", f"total {time.perf_counter() - start:.0f} s"]
    lines += [f"\n{r.name}: {r.detail}" for r in reports]
    text = "\n".join(lines)
    print(text, flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
