"""Code versions of the data steps, in one module that imports nothing.

A step's code version is part of its manifest and of the Dagster asset's ``code_version``; bump it when the step's
output for the same inputs changes. The Dagster code location reads them at load, when it must not import the
steps themselves (torch, diffusers, ...); each step module re-exports its own as ``CODE_VERSION``.
"""

RENDERS_3D = "renders_3d-v2"  # v2: textured per-pixel shading, glTF Y-up -> Z-up, partitions
PROMPT_SET = "prompt_set-v1"
VIDEO_MODEL = "video_model-v3"  # v3: held-out image -> orbit quality (PSNR, LPIPS, colour, consistency)
SYNTHETIC_VIDEOS = "synthetic_videos-v1"
FILTERED_MULTIVIEW = "filtered_multiview_dataset-v4"  # v4: segment_alpha masks
