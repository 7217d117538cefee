"""Micro multi-view datasets for the LRM training tests (4 views at 32 px, 2 objects per shard)."""

from collections.abc import Callable

import pytest

from vfusion3d_core.render.dataset import RenderDatasetConfig, render_dataset


@pytest.fixture(scope="session")
def make_shards(tmp_path_factory) -> Callable[[int], list[str]]:
    """n -> the train shards of n procedural objects (rendered once per n)."""
    cache: dict[int, list[str]] = {}

    def make(num_objects: int) -> list[str]:
        if num_objects not in cache:
            out = tmp_path_factory.mktemp(f"renders{num_objects}")
            render_dataset(RenderDatasetConfig(num_objects=num_objects, num_heldout=0, num_views=4, resolution=32,
                                               samples_per_shard=2), out)
            cache[num_objects] = sorted(str(p) for p in (out / "train").glob("*.tar"))
        return cache[num_objects]

    return make
