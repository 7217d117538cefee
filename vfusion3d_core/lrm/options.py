"""Choices and defaults of `vfusion3d generate` that its option declarations need, in a module without heavy
imports (``vfusion3d generate --help`` must not import torch); the modules that use them re-export them."""

MESH_FORMATS = ("glb", "obj", "ply")
UP_AXES = ("y", "z")
VIDEO_FORMATS = ("auto", "mp4", "gif")
DEFAULT_MAX_PIXELS = 64_000_000  # refuse larger images before decoding (decompression-bomb guard)
