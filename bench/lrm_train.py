"""LRM training throughput: samples/s and peak memory per stage, and the data loader on its own.

    python bench/lrm_train.py                       # tiny, CPU (renders a small dataset first)
    python bench/lrm_train.py --preset paper        # on a GPU: the released config
    python bench/lrm_train.py --shards 'artifacts/renders_3d/versions/*/train/*.tar'

Prints one line per stage: render size, patch, steps timed, samples/s, peak memory (RSS on CPU,
max allocated on CUDA), then the loader's samples/s.
"""

from __future__ import annotations

import argparse
import glob
import os
import tempfile
import threading
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch (see vfusion3d_core/__init__.py)
import torch  # noqa: E402


class PeakRSS:
    """Samples the process RSS in a thread (CPU peak memory; CUDA uses the allocator's counter)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.01)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def peak_memory(fn) -> tuple[float, float]:
    """(seconds, peak GiB) of fn()."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return time.perf_counter() - t, torch.cuda.max_memory_allocated() / 2**30
    with PeakRSS() as rss:
        t = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - t
    return elapsed, rss.peak / 2**30


def default_shards(preset: str) -> list[str]:
    from vfusion3d_core.render.dataset import RenderDatasetConfig, render_dataset

    out = tempfile.mkdtemp(prefix="bench_lrm_")
    resolution = {"tiny": 64, "small": 256, "paper": 512}[preset]
    render_dataset(RenderDatasetConfig(num_objects=16, num_heldout=0, resolution=resolution, samples_per_shard=8), out)
    return sorted(glob.glob(f"{out}/train/*.tar"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--shards", default=None, help="glob of training shards (default: render 16 objects)")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per stage (after 1 warm-up step)")
    parser.add_argument("--loader-samples", type=int, default=32)
    args = parser.parse_args()

    from vfusion3d_core.lrm.train import LRMTrainConfig, LRMTrainer
    from vfusion3d_core.lrm.train.data import MultiviewTrainingStream

    shards = sorted(glob.glob(args.shards)) if args.shards else default_shards(args.preset)
    base = LRMTrainConfig.preset(args.preset, lpips_random_backbone=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"preset={args.preset} device={device} threads={torch.get_num_threads()} shards={len(shards)} "
          f"batch={base.batch_size} views/sample={base.views_per_sample}")
    for stage in base.stages:
        cfg = LRMTrainConfig.preset(args.preset, lpips_random_backbone=True, stages=[stage.__class__(
            0, stage.render_size, stage.patch_size)], steps=args.steps + 1, checkpoint_every=10**9,
            log_every=10**9, warmup_steps=1)
        with tempfile.TemporaryDirectory() as out:
            trainer = LRMTrainer(cfg, shards, out, device=device)
            trainer.train(until_step=1)  # warm-up (allocations, first batch)
            elapsed, peak = peak_memory(lambda trainer=trainer: trainer.train())
        samples = args.steps * cfg.batch_size * cfg.grad_accum
        print(f"stage render={stage.render_size} patch={stage.patch_size or '-'}: {samples / elapsed:.2f} samples/s "
              f"({elapsed / args.steps:.2f} s/step), peak memory {peak:.2f} GiB")
    stream = MultiviewTrainingStream(shards, base.views_per_sample, 64 if args.preset == "tiny" else 512)
    it = iter(stream)
    next(it)
    t = time.perf_counter()
    for _ in range(args.loader_samples):
        next(it)
    rate = args.loader_samples / (time.perf_counter() - t)
    print(f"data loader alone (1 worker, decode + canonicalize + resize): {rate:.1f} samples/s")


if __name__ == "__main__":
    main()
