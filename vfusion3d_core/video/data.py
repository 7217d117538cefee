"""Training orbits from multi-view samples (renders_3d shards): streamed (``OrbitShards``) or in memory
(``OrbitData``, small tests and benches).

Both are *orbit sources*: ``stream(seed, position, batch_size)`` gives an infinite ``IterableDataset`` of
``{"frames": uint8 [F, S, S, 3], "caption": str, "key": str}`` whose order is a pure function of
(seed, position) (the LRM's ``MultiviewTrainingStream`` seams: seeded shard order per epoch, a bounded
shuffle buffer, the (rank, worker) split, skipping the batches already consumed without decoding them),
and ``first(count)`` gives the first ``count`` orbits in file order (evaluation). Memory is bounded by the
shuffle buffer and the batch: nothing scales with the number of objects.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import IterableDataset

from vfusion3d_core.data.sample import MultiviewSample
from vfusion3d_core.data.shards import count_samples, iter_samples
from vfusion3d_core.lrm.train.data import MultiviewTrainingStream, StreamPosition, stream_seed


def composite_over(rgba: np.ndarray, background: tuple[int, int, int] | list[int] = (255, 255, 255)) -> np.ndarray:
    """uint8 [..., 4] straight-alpha RGBA -> uint8 [..., 3] over an RGB ``background``."""
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    bg = np.asarray(background, np.float32)
    return np.round(rgba[..., :3].astype(np.float32) * a + bg * (1.0 - a)).astype(np.uint8)


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """uint8 [..., 4] straight-alpha RGBA -> uint8 [..., 3] over a white background."""
    return composite_over(rgba)


def orbit_frames(sample: MultiviewSample, num_frames: int, resolution: int) -> torch.Tensor:
    """A sample's views composited on white and resized (area) -> uint8 [F, S, S, 3]."""
    if sample.num_views != num_frames:
        raise ValueError(f"{sample.key}: {sample.num_views} views, the video model needs {num_frames}-frame orbits")
    rgb = torch.from_numpy(composite_on_white(sample.views))  # [F, S0, S0, 3]
    if rgb.shape[1] != resolution:
        x = torch.nn.functional.interpolate(rgb.permute(0, 3, 1, 2).float(), size=(resolution, resolution),
                                            mode="area")
        rgb = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return rgb


def orbits_to_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 orbits [B, F, S, S, 3] -> float [B, F, 3, S, S] in [-1, 1]."""
    if frames.dim() != 5 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 orbits [B, F, S, S, 3], got {tuple(frames.shape)}")
    return frames.permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0


class OrbitSource(Protocol):
    """What the trainer and the closeness metric read orbits from."""

    num_frames: int
    resolution: int

    def stream(self, seed: int, position: StreamPosition) -> IterableDataset: ...

    def first(self, count: int) -> tuple[torch.Tensor, list[str]]: ...

    def count(self) -> int: ...


class OrbitStream(MultiviewTrainingStream):
    """renders_3d shards -> infinite stream of {"frames": uint8 [F, S, S, 3], "caption", "key"}; the order,
    shuffle buffer, worker split and resume skipping are MultiviewTrainingStream's."""

    def __init__(self, shards: list[str], num_frames: int, resolution: int, seed: int, position: StreamPosition,
                 shuffle_buffer: int, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(shards, views_per_sample=1, source_size=resolution, seed=seed, rank=rank,
                         world_size=world_size, position=position, random_background=False,
                         shuffle_buffer=shuffle_buffer)
        self.num_frames, self.resolution = num_frames, resolution

    def prepare(self, raw: dict, gen: torch.Generator) -> dict:
        """Decode one raw sample into an orbit (no randomness: the trainer's generator drives the rest)."""
        sample = MultiviewSample.from_wds(raw)
        return {"frames": orbit_frames(sample, self.num_frames, self.resolution), "caption": sample.caption,
                "key": sample.key}


@dataclass
class OrbitShards:
    """Orbits streamed lazily from renders_3d WebDataset shards (the training path of ``video_model``)."""

    shards: list[str]
    num_frames: int
    resolution: int
    shuffle_buffer: int = 64

    def __post_init__(self) -> None:
        self.shards = [str(s) for s in self.shards]
        if not self.shards:
            raise ValueError("no training shards")

    def stream(self, seed: int, position: StreamPosition) -> IterableDataset:
        return OrbitStream(self.shards, self.num_frames, self.resolution, seed, position, self.shuffle_buffer)

    def first(self, count: int) -> tuple[torch.Tensor, list[str]]:
        """The first ``count`` orbits in shard order: (uint8 [n, F, S, S, 3], captions); reads only those."""
        samples = list(itertools.islice(iter_samples(self.shards), count))
        if not samples:
            raise ValueError("no training orbits")
        return (torch.stack([orbit_frames(s, self.num_frames, self.resolution) for s in samples]),
                [s.caption for s in samples])

    def count(self) -> int:
        """Number of orbits (reads the tar indexes, decodes nothing)."""
        return sum(count_samples(s) for s in self.shards)


class _MemoryStream(IterableDataset):
    """OrbitData as an infinite stream: a seeded permutation per epoch, the first ``position`` batches
    skipped (single process)."""

    def __init__(self, data: OrbitData, seed: int, position: StreamPosition) -> None:
        super().__init__()
        self.data, self.seed, self.position = data, seed, position

    def __iter__(self) -> Iterator[dict[str, Any]]:
        skip, produced, epoch = self.position.batches * self.position.batch_size, 0, 0
        while True:
            order = list(range(len(self.data)))
            random.Random(stream_seed(self.seed, "memory", epoch)).shuffle(order)
            for i in order:
                if produced >= skip:
                    yield {"frames": self.data.frames[i], "caption": self.data.captions[i],
                           "key": self.data.keys[i]}
                produced += 1
            epoch += 1


@dataclass
class OrbitData:
    """frames uint8 [N, F, S, S, 3] (orbit order, frame 0 = azimuth 0); captions and keys (N)."""

    frames: torch.Tensor
    captions: list[str]
    keys: list[str]

    def __post_init__(self) -> None:
        n = self.frames.shape[0]
        if self.frames.dim() != 5 or self.frames.shape[-1] != 3 or self.frames.dtype != torch.uint8:
            raise ValueError(f"frames must be uint8 [N, F, S, S, 3], got {self.frames.dtype} "
                             f"{tuple(self.frames.shape)}")
        if not len(self.captions) == n == len(self.keys):
            raise ValueError(f"{n} orbits but {len(self.captions)} captions and {len(self.keys)} keys")
        if n == 0:
            raise ValueError("no training orbits")

    def __len__(self) -> int:
        return self.frames.shape[0]

    @property
    def num_frames(self) -> int:
        return self.frames.shape[1]

    @property
    def resolution(self) -> int:
        return self.frames.shape[2]

    def stream(self, seed: int, position: StreamPosition) -> IterableDataset:
        return _MemoryStream(self, seed, position)

    def first(self, count: int) -> tuple[torch.Tensor, list[str]]:
        return self.frames[:count], list(self.captions[:count])

    def count(self) -> int:
        return len(self)


def orbit_sheet(videos: list[np.ndarray], height: int = 48) -> np.ndarray:
    """Preview image: one row per video ([F, S, S, 3] uint8), its frames side by side, each row scaled
    (nearest) to ``height`` pixels -> uint8 [rows * height, F * height, 3]."""
    assert videos and all(v.ndim == 4 and v.shape[-1] == 3 for v in videos), [v.shape for v in videos]
    rows = []
    for v in videos:
        idx = (np.arange(height) * v.shape[1] // height)  # nearest-neighbour rows/columns
        rows.append(np.concatenate(list(v[:, idx][:, :, idx]), axis=1))
    width = max(r.shape[1] for r in rows)
    return np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows])
