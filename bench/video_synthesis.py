"""Orbit-video model benchmark (random weights): training steps/s per stage, sampling frames/s, peak memory.

Examples:
    python bench/video_synthesis.py                 # tiny on CPU (small when a GPU is present)
    python bench/video_synthesis.py --preset small --prompts 16
Training uses random orbits of the preset's size; sampling runs the full text -> image -> video chain
with classifier-free guidance (two UNet passes per step) at the preset's sampler settings.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from vfusion3d_core.video import OrbitData, OrbitVideoModel, SampleSettings, VideoModelConfig, VideoTrainer
from vfusion3d_core.video.sampler import sample_orbits


def peak_memory_mib(device: torch.device) -> float:
    """Peak GPU allocation since the last reset, or the process's peak RSS on CPU (MiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_training(cfg: VideoModelConfig, device: torch.device, steps: int, warmup: int = 2) -> None:
    """steps/s of each training stage (after ``warmup`` steps), on random orbits."""
    g = torch.Generator().manual_seed(0)
    n = max(cfg.vae_batch, cfg.image_batch, cfg.video_batch, 8)
    frames = torch.randint(0, 256, (n, cfg.num_frames, cfg.resolution, cfg.resolution, 3), generator=g,
                           dtype=torch.uint8)
    data = OrbitData(frames, [f"a procedural object {i}" for i in range(n)], [f"o{i}" for i in range(n)])
    for stage in ("vae", "image", "video"):
        counts = {"vae_steps": 0, "image_steps": 0, "video_steps": 0, f"{stage}_steps": warmup + steps}
        model = OrbitVideoModel.build(VideoModelConfig.from_dict({**cfg.to_dict(), **counts})).to(device)
        trainer = VideoTrainer(model, data)
        trainer.train(until=warmup)
        sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        trainer.train()
        sync(device)
        dt = time.perf_counter() - start
        batch = {"vae": f"{cfg.vae_batch} frames", "image": f"{cfg.image_batch} images",
                 "video": f"{cfg.video_batch}x{cfg.num_frames} frames"}[stage]
        print(f"train {stage:<6} {steps / dt:8.2f} steps/s  ({batch} per step, {dt / steps:.3f} s/step, "
              f"peak {peak_memory_mib(device):.0f} MiB)", flush=True)


@torch.no_grad()
def bench_sampling(cfg: VideoModelConfig, device: torch.device, prompts: int) -> None:
    """frames/s of text -> orbit sampling for ``prompts`` prompts in batches of ``sample_batch``."""
    model = OrbitVideoModel.build(cfg).to(device).eval()
    texts = [f"a small procedural object {i}" for i in range(prompts)]
    settings = SampleSettings.from_model(model)
    sample_orbits(model, texts[:1], [0], settings)  # warm-up
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    videos = sample_orbits(model, texts, list(range(prompts)), settings)
    sync(device)
    dt = time.perf_counter() - start
    n_frames = videos.shape[0] * videos.shape[1]
    print(f"sample {prompts} prompts x {cfg.num_frames} frames at {cfg.resolution}px ({settings.scheduler}, "
          f"{settings.steps} steps, CFG, batch {cfg.sample_batch}): {n_frames / dt:.2f} frames/s, "
          f"{dt / prompts:.3f} s/video, {dt:.1f} s total, peak {peak_memory_mib(device):.0f} MiB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=("tiny", "small"), default=None,
                        help="default: small on a GPU, tiny otherwise")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    parser.add_argument("--train-steps", type=int, default=10, help="timed steps per training stage")
    parser.add_argument("--prompts", type=int, default=None, help="prompts to sample (default: 2 batches)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    preset = args.preset or ("small" if device.type == "cuda" else "tiny")
    cfg = VideoModelConfig.preset(preset)
    print(f"video synthesis benchmark: preset {preset}, device {device}, torch threads {torch.get_num_threads()}",
          flush=True)
    bench_training(cfg, device, args.train_steps)
    bench_sampling(cfg, device, args.prompts or 2 * cfg.sample_batch)


if __name__ == "__main__":
    main()
