"""LRM training as a Dagster Pipes step: ``python -m vfusion3d_core.lrm.train.pipes_entry`` (or under torchrun).

Extras (set by the ``lrm_*`` assets in execution=pipes): ``request``, an ``LRMTrainRequest`` as a dict
(recipe, shards or ``s3://`` URLs, work dir, starting weights, DINOv2 folder, compute settings, threads).
The step runs ``run_train_request`` on it, exactly what the in-process path runs.

Reports every logged training step as a custom message ``{"step", "metrics"}`` and the final metrics as
materialization metadata. Needs ``dagster-pipes`` only.
"""

from __future__ import annotations

import logging

from vfusion3d_core.pipes import pipes_step


def main() -> None:
    """Run the training request of this Pipes step and report its progress and result."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    with pipes_step() as step:
        from vfusion3d_core.lrm.train.request import LRMTrainRequest, run_train_request

        if "request" not in step.extras:
            raise ValueError(f"the LRM training step needs extras['request'], got keys {sorted(step.extras)}")
        request = LRMTrainRequest.from_dict(dict(step.extras["request"]))

        def log(metrics: dict[str, float], at: int) -> None:
            step.metrics(metrics, at)
            step.log(f"step {at}/{request.recipe.steps}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))

        outcome = run_train_request(request, log, on_resume=lambda at: step.log(f"resuming from step {at}"))
        if outcome.rank == 0:
            step.result({"final_metrics": outcome.result.last_metrics, "step": outcome.result.step,
                         "resumed_from_step": outcome.resumed_from, "world_size": outcome.world,
                         "compute": request.compute.describe()})


if __name__ == "__main__":
    main()
