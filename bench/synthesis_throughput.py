"""Per-video synthesis cost and bytes, and what they mean for a 4M-prompt run (docs/scaling.md).

Synthesizes N prompts with a randomly initialised video model of the preset through the same code the
`synthetic_videos` asset runs (``synthesize_shard``: sampling + PNG encoding + WebDataset shard writing),
then prints seconds and bytes per video and the arithmetic for --target prompts over --workers workers.

    python bench/synthesis_throughput.py                        # tiny, 32 prompts, on this machine
    python bench/synthesis_throughput.py --preset small --prompts 4 --workers 8 64
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from vfusion3d_core.prompts.shards import PromptRecord
from vfusion3d_core.video import OrbitVideoModel, SampleSettings, VideoModelConfig
from vfusion3d_core.video.synthesis import synthesize_shard


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=("tiny", "small", "paper"), default="tiny")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    parser.add_argument("--target", type=int, default=4_000_000, help="prompts of the full run")
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 8, 64, 256])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg = VideoModelConfig.preset(args.preset)
    model = OrbitVideoModel.build(cfg).to(device).eval()
    settings = SampleSettings.from_model(model)
    records = [PromptRecord(f"p{i:06d}", f"a small procedural object number {i}") for i in range(args.prompts)]
    with tempfile.TemporaryDirectory() as tmp:
        synthesize_shard(model, "0" * 64, records[:1], "warmup", Path(tmp) / "warm", settings)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = synthesize_shard(model, "0" * 64, records, "bench", Path(tmp) / "out", settings, samples_per_shard=64)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        size = sum((Path(tmp) / "out" / f).stat().st_size for f in result.files)
    per_video, per_bytes = seconds / args.prompts, size / args.prompts
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"preset {args.preset} ({cfg.num_frames} frames at {cfg.resolution}px, {settings.scheduler} "
          f"{settings.steps} steps, CFG, batch {cfg.sample_batch}) on {where}: {args.prompts} videos in "
          f"{seconds:.1f} s = {per_video:.3f} s/video, {per_bytes / 1024:.0f} KiB/video (PNG frames in tar)")
    total_s = args.target * per_video
    print(f"{args.target:,} prompts: {total_s / 3600:,.0f} worker-hours, {args.target * per_bytes / 2**40:.2f} TiB")
    for w in args.workers:
        print(f"  {w:>4} workers: {total_s / w / 3600:,.1f} h wall ({total_s / w / 86400:,.2f} days)")


if __name__ == "__main__":
    main()
