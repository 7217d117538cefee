"""Shared fixtures: deterministic seeds."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)

