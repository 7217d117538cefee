"""Before a whole-graph run: every pretrained model folder the graph needs, checked up front.

At ``small`` / ``paper`` the graph trains from real pretrained models. Each asset refuses to start without
its folders, but in a whole-graph run the first such asset comes after `renders_3d` has rendered every
object; ``missing_pretrained`` asks every asset config the same question (its own ``check_pretrained``)
before anything runs, so a run without weights fails in seconds, naming every missing path at once.

    python -m vfusion3d_pipeline.preflight [--preset paper] [--config RUN_CONFIG.json]
"""

import argparse
import json
import os
from pathlib import Path

import dagster as dg

from vfusion3d_pipeline.asset_keys import EVAL_METRICS, FINETUNED, PRETRAINED, QUALITY, THREE_D_ONLY, VIDEO_MODEL
from vfusion3d_pipeline.assets.evaluation import EvalConfig
from vfusion3d_pipeline.assets.filtering import QualityModelsConfig
from vfusion3d_pipeline.assets.lrm import LRMTrainAssetConfig
from vfusion3d_pipeline.assets.video import VideoModelAssetConfig

# asset -> (its config class, extra arguments of its check): lrm_finetuned starts from lrm_pretrained.
CHECKED = {VIDEO_MODEL: (VideoModelAssetConfig, {}), QUALITY: (QualityModelsConfig, {}),
           THREE_D_ONLY: (LRMTrainAssetConfig, {}), PRETRAINED: (LRMTrainAssetConfig, {}),
           FINETUNED: (LRMTrainAssetConfig, {"has_init": True}), EVAL_METRICS: (EvalConfig, {})}


def missing_pretrained(preset: str, run_config: dict | None = None) -> list[str]:
    """One line per asset that would refuse to start at ``preset`` with ``run_config``'s asset configs."""
    ops = (run_config or {}).get("ops", {})
    problems = []
    for asset, (config_cls, extra) in CHECKED.items():
        try:
            config_cls(**ops.get(asset, {}).get("config", {})).check_pretrained(preset, **extra)
        except dg.Failure as exc:
            text = str(exc.description)
            problems.append(text if text.startswith(asset) else f"{asset}: {text}")
    return problems


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default=os.environ.get("VFUSION3D_PRESET", "tiny"))
    parser.add_argument("--config", help="run config JSON ({'ops': {asset: {'config': {...}}}})")
    args = parser.parse_args(argv)
    run_config = json.loads(Path(args.config).read_text()) if args.config else None
    problems = missing_pretrained(args.preset, run_config)
    if problems:
        raise SystemExit(f"[preflight] cannot start at preset {args.preset!r}:\n  " + "\n  ".join(problems))
    print(f"[preflight] every pretrained folder the graph needs at preset {args.preset!r} is there")


if __name__ == "__main__":
    main()
