"""Video-model fine-tuning as a Dagster Pipes step: ``python -m vfusion3d_core.video.finetune_pipes_entry``.

Extras (set by `video_model` in execution=pipes): ``config`` (VideoModelConfig as a dict), ``render_shards``
(the renders' train shards), ``out_dir`` (the asset's staging model directory), ``training_data`` (input
name -> digest, for the model card), ``checkpoint_dir`` (resumable checkpoints), ``eval_count`` and
``torch_threads`` (optional).

Reports every logged training step as a custom message ``{"step", "metrics"}``, progress as log lines, then
the written files, counts, closeness metrics and the step it resumed from as materialization metadata.
Needs ``dagster-pipes`` only.
"""

from __future__ import annotations

from vfusion3d_core.pipes import pipes_step


def main() -> None:
    with pipes_step() as step:
        import torch

        from vfusion3d_core.video.config import VideoModelConfig
        from vfusion3d_core.video.finetune import finetune_video_model

        p = step.extras
        if p.get("torch_threads"):
            torch.set_num_threads(int(p["torch_threads"]))
        cfg = VideoModelConfig.from_dict(dict(p["config"]))
        result = finetune_video_model(cfg, list(p["render_shards"]), p["out_dir"], dict(p["training_data"]),
                                      p.get("checkpoint_dir"), step.metrics, int(p.get("eval_count", 8)), step.log)
        step.result({"files": result.files, "counts": result.counts, "metrics": result.metrics,
                     "resumed_from_step": result.resumed_from_step})


if __name__ == "__main__":
    main()
