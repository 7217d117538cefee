"""Child workloads the fault-injection harness kills (``python tests/reliability/workloads.py KIND ...``).

Every workload is deterministic for its seed, prints READY (``faults.ready``) once imports are done, and is
safe to re-run on the state a killed run left behind:

    shards DIR --samples N --per-shard K --seed S    ShardWriter writes N samples into DIR/shard-*.tar
    commit ROOT --seeds 0 1 ...                      per seed: shards into ArtifactStore staging -> manifest ->
                                                     rename into versions/ -> LATEST.json (asset "faulty")
    train OUT --shards A.tar B.tar ...               LRMTrainer with a checkpoint every step, resuming from OUT
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
from faults import done, ready

ASSET = "faulty"


def make_sample(key: str, seed: int, views: int = 4, size: int = 16):
    """A multi-view sample with random pixels and a real orbit (rigid cameras)."""
    from vfusion3d_core.data import MultiviewSample

    rng = np.random.default_rng(seed)
    rgba = rng.integers(0, 256, (views, size, size, 4), dtype=np.uint8)
    rgba[..., 3] = np.where(rng.random((views, size, size)) < 0.5, 255, 0)
    azimuth = np.arange(views) * 2 * np.pi / views
    elevation = np.deg2rad(10.0 + 30.0 * rng.random())
    c2w = np.zeros((views, 4, 4), np.float32)
    for i, az in enumerate(azimuth):
        eye = 1.5 * np.array([np.cos(elevation) * np.cos(az), np.cos(elevation) * np.sin(az), np.sin(elevation)])
        forward = -eye / np.linalg.norm(eye)
        right = np.cross(forward, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        up = np.cross(right, forward)
        c2w[i, :3, :3] = np.stack([right, up, -forward], axis=1)  # OpenGL camera axes: looks along -z
        c2w[i, :3, 3] = eye
        c2w[i, 3, 3] = 1.0
    intrinsics = np.tile(np.array([0.75, 0.75, 0.5, 0.5], np.float32), (views, 1))
    meta = {"uid": key, "split": "train", "elevation_deg": float(np.rad2deg(elevation)), "radius": 1.5}
    return MultiviewSample(key, f"object {key}", rgba, c2w, intrinsics, meta)


def sample_keys(n: int, seed: int) -> list[str]:
    return [f"s{seed}-{i:04d}" for i in range(n)]


def write_shards(directory, n: int, per_shard: int, seed: int, size: int = 16) -> list:
    from vfusion3d_core.data import ShardWriter

    with ShardWriter(directory, per_shard) as writer:
        for i, key in enumerate(sample_keys(n, seed)):
            writer.write(make_sample(key, seed * 100_000 + i, size=size))
    return writer.shards


def cmd_shards(args: argparse.Namespace) -> None:
    ready()
    write_shards(args.dir, args.samples, args.per_shard, args.seed, args.size)
    done()


def cmd_commit(args: argparse.Namespace) -> None:
    from vfusion3d_core.data import ArtifactStore, Manifest, file_entries

    store = ArtifactStore(args.root)
    ready()
    for seed in args.seeds:
        store.clean_staging(ASSET)
        with store.staging(ASSET) as staging:
            shards = write_shards(staging / "data", args.samples, args.per_shard, seed)
            files = [p.relative_to(staging).as_posix() for p in shards]
            manifest = Manifest(ASSET, file_entries(staging, files), {"samples": args.samples, "shards": len(files)},
                                {"seed": seed, "samples": args.samples}, code_version="faulty-v1",
                                run_id=f"pid-{os.getpid()}")
            store.commit(staging, manifest, ASSET)
    done()


def train_config(**overrides):
    from vfusion3d_core.lrm.train import LRMTrainConfig, StageConfig

    base = dict(model_preset="tiny", steps=6, batch_size=2, views_per_sample=2, warmup_steps=2,
                stages=[StageConfig(0, 32)], lpips_weight=0.0, mse_weight=1.0, camera_noise_std=0.01,
                checkpoint_every=1, keep_checkpoints=2, log_every=1, shuffle_buffer=2, seed=0)
    return LRMTrainConfig(**{**base, **overrides})


def cmd_train(args: argparse.Namespace) -> None:
    import torch

    from vfusion3d_core.lrm.train import LRMTrainer

    torch.set_num_threads(1)
    trainer = LRMTrainer(train_config(steps=args.steps), args.shards, args.out)
    ready()
    result = trainer.train()
    done()
    print(json.dumps({"step": result.step}), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="kind", required=True)
    p = sub.add_parser("shards")
    p.add_argument("dir")
    p.add_argument("--samples", type=int, default=40)
    p.add_argument("--per-shard", type=int, default=4)
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_shards)
    p = sub.add_parser("commit")
    p.add_argument("root")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--samples", type=int, default=12)
    p.add_argument("--per-shard", type=int, default=4)
    p.set_defaults(fn=cmd_commit)
    p = sub.add_parser("train")
    p.add_argument("out")
    p.add_argument("--shards", nargs="+", required=True)
    p.add_argument("--steps", type=int, default=8)
    p.set_defaults(fn=cmd_train)
    args = parser.parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
