"""vfusion3d core: cameras, objects, rendering, data formats, video model, LRM. No Dagster import."""

import os

# OpenMP threads that busy-wait make torch 10-15x slower whenever another process shares the cores
# (dataloader workers, torchrun ranks, a second job). Passive waiting costs nothing when alone.
# Must be set before torch initializes OpenMP, i.e. before the first `import torch`.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
