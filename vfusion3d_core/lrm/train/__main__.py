"""Command-line training, for one process or many under torchrun:

    python -m vfusion3d_core.lrm.train --shards 'data/train/*.tar' --out runs/lrm --preset tiny
    torchrun --nproc_per_node 8 -m vfusion3d_core.lrm.train --shards ... --out ... --preset paper \
        --set steps=100000 --init-from lrm_pretrained/model

``--set key=value`` overrides any LRMTrainConfig field (JSON values). Resumes from the newest
checkpoint in ``--out``. Rank 0 writes ``OUT/final`` (model.safetensors + config.json) at the end.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
from pathlib import Path

from vfusion3d_core.lrm.model import LRM
from vfusion3d_core.lrm.train.config import LRMTrainConfig
from vfusion3d_core.lrm.train.trainer import LRMTrainer


def parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", nargs="+", required=True, help="shard paths or glob patterns")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--set", nargs="*", default=[], dest="overrides", metavar="KEY=VALUE")
    parser.add_argument("--init-from", type=Path, default=None, help="LRM checkpoint dir to start from")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    shards = sorted({p for pattern in args.shards for p in (glob.glob(pattern) or [pattern])})
    cfg = LRMTrainConfig.preset(args.preset, **parse_overrides(args.overrides))
    model = LRM.from_pretrained(args.init_from).train() if args.init_from else None
    trainer = LRMTrainer(cfg, shards, args.out, model=model)
    result = trainer.train()
    if trainer.rank == 0:
        trainer.model.save_pretrained(args.out / "final")
        print(json.dumps({"step": result.step, **result.last_metrics}))


if __name__ == "__main__":
    main()
