"""Thresholds the Dagster code location reads at load, in one module that imports nothing.

The code location must load without the ML stack (torch, transformers), so a constant it uses as a default argument
value cannot come from the module that computes with it; that module re-exports it from here.
"""

# Held-out caption leakage (vfusion3d_core.metrics.leakage): MiniLM cosine at or above which a training caption
# is a near duplicate of a held-out one -- the threshold prompt_set uses to call two prompts the same.
NEAR_DUP_THRESHOLD = 0.95
