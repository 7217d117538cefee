"""Shared fixtures: a seeded, randomly initialised tiny LRM and its inputs."""

from __future__ import annotations

import pytest
import torch

from vfusion3d_core.cameras import default_source_camera, turntable_cameras
from vfusion3d_core.lrm import LRM, get_preset


@pytest.fixture(scope="session")
def tiny_model() -> LRM:
    torch.manual_seed(0)
    return LRM(get_preset("tiny")).eval()


@pytest.fixture(scope="session")
def tiny_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    image = torch.rand(2, 3, 64, 64, generator=gen)
    return image, default_source_camera().expand(2, 16).clone()


@pytest.fixture(scope="session")
def tiny_planes(tiny_model, tiny_inputs) -> torch.Tensor:
    with torch.no_grad():
        return tiny_model.encode(*tiny_inputs)


@pytest.fixture(scope="session")
def turntable_vectors():
    """Factory: (n, views) -> [n, views, 25] render vectors of the default turntable."""
    def make(n: int, views: int) -> torch.Tensor:
        return turntable_cameras(views).render_vectors()[None].expand(n, -1, -1).clone()
    return make
