"""Workloads of ``bench/data_memory.py``: one module per pipeline step that streams training data.

Each module exposes

    run(multiview_shards: list[str], video_shards: list[str], work_dir: pathlib.Path) -> dict

which runs a few real iterations of its step over the given shards (renders_3d-schema multi-view shards and
synthetic-video shards of 100, 1,000 or 10,000 objects) and returns a small JSON-serialisable summary
(e.g. samples consumed). The bench runs every module in a fresh subprocess per dataset size and compares
the peak RSS across sizes: a step that streams with bounded buffers uses the same memory at every size.

Expected modules: ``lrm_training`` (LRM training), ``video_training`` (video model fine-tuning) and
``filtering`` (multi-view filtering); the bench says which of them are missing.
"""

EXPECTED = ("lrm_training", "video_training", "filtering")
