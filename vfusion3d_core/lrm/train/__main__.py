"""Command-line training, for one process or many under torchrun:

    python -m vfusion3d_core.lrm.train --shards 'data/train/*.tar' --out runs/lrm --preset tiny
    torchrun --nproc_per_node 8 -m vfusion3d_core.lrm.train --shards ... --out ... --preset paper \
        --set steps=100000 --dino-pretrained models/dinov2-base --precision bf16

``--set key=value`` overrides any LRMTrainConfig field (JSON values). Resumes from the newest
checkpoint in ``--out``. At ``small``/``paper`` the encoder starts from ``--dino-pretrained`` (a
``Dinov2Model.save_pretrained`` folder) unless ``--init-from`` or ``--from-scratch`` is given. Rank 0
writes ``OUT/final`` (model.safetensors + config.json) at the end and prints its last metrics as JSON.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
from pathlib import Path

from vfusion3d_core.compute import DEVICES_HELP, PRECISIONS, ComputeSettings
from vfusion3d_core.lrm.train.config import LRMTrainConfig
from vfusion3d_core.lrm.train.request import LRMTrainRequest, run_train_request


def parse_overrides(items: list[str]) -> dict:
    """``key=value`` strings -> dict; values parsed as JSON when they are JSON, else kept as strings."""
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m vfusion3d_core.lrm.train``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", nargs="+", required=True, help="shard paths or glob patterns")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--set", nargs="*", default=[], dest="overrides", metavar="KEY=VALUE")
    parser.add_argument("--init-from", type=Path, default=None, help="LRM checkpoint dir to start from")
    parser.add_argument("--dino-pretrained", default=None, metavar="PATH",
                        help="Dinov2Model.save_pretrained folder the encoder starts from (needed at small/paper)")
    parser.add_argument("--from-scratch", action="store_true",
                        help="small/paper: allow a randomly initialised encoder (no --dino-pretrained)")
    parser.add_argument("--device", default="auto", help=DEVICES_HELP)
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="auto: bf16 autocast where native (CUDA, AVX512-BF16/AMX CPUs), else fp32")
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help="recompute the transformer blocks in the backward pass (less memory)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return parser


def request_from_args(args: argparse.Namespace) -> LRMTrainRequest:
    """The training request the parsed command line describes."""
    shards = sorted({p for pattern in args.shards for p in (glob.glob(pattern) or [pattern])})
    return LRMTrainRequest(
        recipe=LRMTrainConfig.preset(args.preset, **parse_overrides(args.overrides)), shards=shards,
        work_dir=str(args.out), init=str(args.init_from) if args.init_from else None,
        dino_pretrained_path=args.dino_pretrained, from_scratch=args.from_scratch,
        compute=ComputeSettings(args.device, args.precision, args.gradient_checkpointing), torch_threads=args.threads)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m vfusion3d_core.lrm.train``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    outcome = run_train_request(request_from_args(args))
    if outcome.rank == 0:
        print(json.dumps({"step": outcome.result.step, **outcome.result.last_metrics}))


if __name__ == "__main__":
    main()
