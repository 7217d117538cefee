"""Shared fixtures: a seeded, randomly initialised tiny LRM and its inputs."""

from __future__ import annotations

import math

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


@pytest.fixture(scope="session")
def shaped_tiny_model(tiny_model, tiny_planes) -> LRM:
    """The tiny model with its density output stretched so that density = 1 cuts through the box
    (random weights alone give a nearly constant density well below the mesh level)."""
    import copy

    model = copy.deepcopy(tiny_model)
    last = model.decoder.layers[-1]
    points = torch.rand(1, 4096, 3, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.no_grad():
        last.weight[0] *= 40
        last.bias[0] = 0
        raw, _ = model.query_raw(tiny_planes[:1], points)
        last.bias[0] = 1 + math.log(math.e - 1) - raw.median()  # median density = softplus(raw - 1) = 1
    return model
