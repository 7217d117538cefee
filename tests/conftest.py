"""Shared fixtures: deterministic seeds and a micro-sized renders config."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


MICRO_RENDERS = {"num_objects": 6, "num_heldout": 2, "num_views": 4, "resolution": 32, "samples_per_shard": 4}
