"""Synthesis of one prompt shard as a Dagster Pipes step: ``python -m vfusion3d_core.video.pipes_entry``.

Extras (set by `synthetic_videos` in execution=pipes): ``request``, a ``SynthesisRequest`` as a dict (model
directory and digest, prompt shard and its key, staging output directory, sampler settings, base seed,
shard size, batch size, torch_threads and the compute settings).

Reports progress as log lines and custom messages ``{"step": videos done, "metrics": {...}}``, then the
written files and counts as materialization metadata. Needs ``dagster-pipes`` only.
"""

from __future__ import annotations

import time

from vfusion3d_core.pipes import pipes_step


def main() -> None:
    with pipes_step() as step:
        from vfusion3d_core.video.requests import SynthesisRequest
        from vfusion3d_core.video.synthesis import run_synthesis

        request = SynthesisRequest.from_dict(dict(step.extras["request"]))
        start = time.perf_counter()

        def progress(done: int, total: int) -> None:
            elapsed = time.perf_counter() - start
            step.metrics({"videos": done, "seconds_per_video": elapsed / max(done, 1)}, done)
            step.log(f"{request.shard}: generated {done}/{total} videos")

        result = run_synthesis(request, progress)
        elapsed = time.perf_counter() - start
        step.result({"files": result.files, "counts": result.counts, "seconds": elapsed,
                     "seconds_per_video": elapsed / max(result.counts["videos"], 1)})


if __name__ == "__main__":
    main()
