"""LRM training as a Dagster Pipes step: ``python -m vfusion3d_core.lrm.train.pipes_entry`` (or under torchrun).

Extras (set by the ``lrm_*`` assets in execution=pipes):

- ``recipe``: LRMTrainConfig as a dict; ``shards``: shard paths or ``s3://`` URLs (streamed);
- ``work_dir``: resumable checkpoints and, at the end, ``work_dir/final`` (model.safetensors + config.json);
- ``init``: starting weights (an LRM directory, or with ``init_official`` a released weight file) or null;
  ``official_config``: that file's config.json (optional); ``torch_threads``: CPU threads (optional).

Reports every logged training step as a custom message ``{"step", "metrics"}`` and the final metrics as
materialization metadata. Needs ``dagster-pipes`` only.
"""

from __future__ import annotations

import logging
from pathlib import Path

from vfusion3d_core.pipes import pipes_step


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    with pipes_step() as step:
        import torch

        from vfusion3d_core.lrm.generate import load_model
        from vfusion3d_core.lrm.model import LRM
        from vfusion3d_core.lrm.train.config import LRMTrainConfig
        from vfusion3d_core.lrm.train.trainer import LRMTrainer

        p = step.extras
        if p.get("torch_threads"):
            torch.set_num_threads(int(p["torch_threads"]))
        recipe = LRMTrainConfig.from_dict(dict(p["recipe"]))
        work = Path(p["work_dir"])
        model = None
        if p.get("init"):
            model = load_model(official=Path(p["init"]), official_config=p.get("official_config")) \
                if p.get("init_official") else LRM.from_pretrained(p["init"])
            model.train()

        def log(metrics: dict[str, float], at: int) -> None:
            step.metrics(metrics, at)
            step.log(f"step {at}/{recipe.steps}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))

        trainer = LRMTrainer(recipe, list(p["shards"]), work, model=model, log_fn=log)
        resumed = trainer.step
        if resumed:
            step.log(f"resuming from step {resumed}")
        result = trainer.train()
        if trainer.rank == 0:
            trainer.model.save_pretrained(work / "final")
            step.result({"final_metrics": result.last_metrics, "step": result.step, "resumed_from_step": resumed,
                         "world_size": trainer.world})


if __name__ == "__main__":
    main()
