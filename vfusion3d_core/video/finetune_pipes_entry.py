"""Video-model fine-tuning as a Dagster Pipes step: ``python -m vfusion3d_core.video.finetune_pipes_entry``.

Extras (set by `video_model` in execution=pipes): ``request``, a ``FinetuneRequest`` as a dict (model config
with the pretrained folder paths, the renders' train shards, the staging model directory, training data
digests, checkpoint directory, preset / from_scratch, eval_count, torch_threads, the compute settings and the
held-out shards / heldout_count of the image -> orbit quality).

Reports every logged training step as a custom message ``{"step", "metrics"}``, progress as log lines, then
the written files, counts, closeness metrics, the step it resumed from and the run info (random components,
text encoder, compute) as materialization metadata. Needs ``dagster-pipes`` only.
"""

from __future__ import annotations

from vfusion3d_core.pipes import pipes_step


def main() -> None:
    with pipes_step() as step:
        from vfusion3d_core.video.finetune import finetune_video_model
        from vfusion3d_core.video.requests import FinetuneRequest

        request = FinetuneRequest.from_dict(dict(step.extras["request"]))
        result = finetune_video_model(request, step.metrics, step.log)
        step.result({"files": result.files, "counts": result.counts, "metrics": result.metrics,
                     "resumed_from_step": result.resumed_from_step, "info": result.info})


if __name__ == "__main__":
    main()
