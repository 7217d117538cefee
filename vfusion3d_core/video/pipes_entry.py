"""Synthesis of one prompt shard as a Dagster Pipes step: ``python -m vfusion3d_core.video.pipes_entry``.

Extras (set by `synthetic_videos` in execution=pipes): ``model_dir`` and ``model_digest`` (the video model
version), ``prompt_shard`` (a parquet prompt shard), ``shard`` (its key), ``out_dir`` (the asset's staging
directory: WebDataset shards land there), ``settings`` (scheduler, steps, image_guidance, video_guidance),
``base_seed``, ``samples_per_shard``, ``batch_size`` and ``torch_threads`` (optional).

Reports progress as log lines and custom messages ``{"step": videos done, "metrics": {...}}``, then the
written files and counts as materialization metadata. Needs ``dagster-pipes`` only.
"""

from __future__ import annotations

import time

from vfusion3d_core.pipes import pipes_step


def main() -> None:
    with pipes_step() as step:
        import torch

        from vfusion3d_core.prompts.shards import read_prompt_shard
        from vfusion3d_core.video.model import OrbitVideoModel
        from vfusion3d_core.video.sampler import SampleSettings
        from vfusion3d_core.video.synthesis import synthesize_shard

        p = step.extras
        if p.get("torch_threads"):
            torch.set_num_threads(int(p["torch_threads"]))
        s = p["settings"]
        settings = SampleSettings(s["scheduler"], int(s["steps"]), float(s["image_guidance"]),
                                  tuple(float(g) for g in s["video_guidance"]))  # type: ignore[arg-type]
        model = OrbitVideoModel.from_pretrained(p["model_dir"])
        records = read_prompt_shard(p["prompt_shard"])
        start = time.perf_counter()

        def progress(done: int, total: int) -> None:
            elapsed = time.perf_counter() - start
            step.metrics({"videos": done, "seconds_per_video": elapsed / max(done, 1)}, done)
            step.log(f"{p['shard']}: generated {done}/{total} videos")

        result = synthesize_shard(model, p["model_digest"], records, p["shard"], p["out_dir"], settings,
                                  int(p.get("base_seed", 0)), int(p.get("samples_per_shard", 64)),
                                  p.get("batch_size"), progress)
        elapsed = time.perf_counter() - start
        step.result({"files": result.files, "counts": result.counts, "seconds": elapsed,
                     "seconds_per_video": elapsed / max(result.counts["videos"], 1)})


if __name__ == "__main__":
    main()
