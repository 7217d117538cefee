"""The synthetic video sample schema (`synthetic_videos` shards), one WebDataset sample per prompt.

Members of sample KEY (KEY = the prompt_id) in a tar shard:

    KEY.000.png ... KEY.{F-1:03d}.png   RGB frames of the generated orbit, 8-bit, frame i at nominal azimuth i*360/F
    KEY.prompt.txt                      UTF-8 prompt
    KEY.seed.txt                        decimal seed of the prompt's noise generator
    KEY.model.txt                       manifest digest of the `video_model` version that generated it
    KEY.meta.json                       prompt_id, shard, scheduler, steps, guidance, num_frames, resolution, ...

Shards are written with ``vfusion3d_core.data.shards.ShardWriter`` (duck-typed: ``key`` + ``to_wds``)
and read with ``iter_raw_samples`` + ``SyntheticVideoSample.from_wds``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vfusion3d_core.data.sample import SampleError, check_sample_key, decode_png, encode_png_sequence, png_member_names
from vfusion3d_core.data.shards import iter_raw_samples

REQUIRED = ("prompt.txt", "seed.txt", "model.txt", "meta.json")


@dataclass
class SyntheticVideoSample:
    """frames uint8 [F, S, S, 3]; seed and the generating model's digest travel with every sample."""

    key: str
    prompt: str
    frames: np.ndarray
    seed: int
    model_digest: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
            raise SampleError(f"{self.key}: frames must be uint8 [F, S, S, 3], got {self.frames.dtype} "
                              f"{self.frames.shape}")
        check_sample_key(self.key)
        if not self.model_digest or not all(c in "0123456789abcdef" for c in self.model_digest):
            raise SampleError(f"{self.key}: model digest must be lowercase hex, got {self.model_digest!r}")

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]

    def to_wds(self) -> dict[str, Any]:
        """WebDataset sample dict of bytes (deterministic for equal inputs)."""
        out: dict[str, Any] = {"__key__": self.key, **encode_png_sequence(self.frames, "RGB")}
        out["prompt.txt"] = self.prompt.encode("utf-8")
        out["seed.txt"] = str(int(self.seed)).encode()
        out["model.txt"] = self.model_digest.encode()
        out["meta.json"] = json.dumps(self.meta, sort_keys=True).encode("utf-8")
        return out

    @classmethod
    def from_wds(cls, sample: dict[str, Any]) -> SyntheticVideoSample:
        key = sample.get("__key__", "?")
        source = f"{sample.get('__url__', '?')}:{key}"
        names = png_member_names(sample, source)
        missing = [m for m in REQUIRED if m not in sample]
        if not names or missing:
            raise SampleError(f"{source}: incomplete video sample (frames: {len(names)}, missing {missing})")
        try:
            frames = np.stack([decode_png(sample[n], "RGB") for n in names])
            out = cls(key, sample["prompt.txt"].decode("utf-8"), frames, int(sample["seed.txt"].decode()),
                      sample["model.txt"].decode(), json.loads(sample["meta.json"]))
        except (OSError, ValueError, UnicodeDecodeError, Image.DecompressionBombError) as exc:
            raise SampleError(f"{source}: cannot decode video sample: {exc}") from exc
        return out


def iter_video_samples(urls: Iterable[str | Path]) -> Iterator[SyntheticVideoSample]:
    """Decoded synthetic video samples of shards, in order (ShardError / SampleError on bad data)."""
    for raw in iter_raw_samples(urls):
        yield SyntheticVideoSample.from_wds(raw)

