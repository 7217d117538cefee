"""The synthetic video sample schema (`synthetic_videos` shards), one WebDataset sample per prompt.

Members of sample KEY (KEY = the prompt_id) in a tar shard:

    KEY.000.png ... KEY.{F-1:03d}.png   RGB frames of the generated orbit, 8-bit, frame i at nominal azimuth i*360/F
    KEY.prompt.txt                      UTF-8 prompt
    KEY.seed.txt                        decimal seed of the prompt's noise generator
    KEY.model.txt                       manifest digest of the `video_model` version that generated it
    KEY.meta.json                       prompt_id, shard, scheduler, steps, guidance, num_frames, resolution, ...

Shards are written with ``vfusion3d_core.data.shards.ShardWriter`` (duck-typed: ``key`` + ``to_wds``)
and read with ``iter_video_samples`` (``iter_raw_samples`` + ``SyntheticVideoSample.from_wds``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vfusion3d_core.data.bad_items import SkipReport
from vfusion3d_core.data.sample import (
    SampleError,
    check_sample_key,
    decode_member,
    decode_png,
    encode_png_sequence,
    png_member_names,
)
from vfusion3d_core.data.shards import iter_decoded

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
        frames = np.stack([decode_member(sample, n, source, lambda b: decode_png(b, "RGB")) for n in names])
        prompt = decode_member(sample, "prompt.txt", source, lambda b: b.decode("utf-8"))
        seed = decode_member(sample, "seed.txt", source, lambda b: int(b.decode()))
        digest = decode_member(sample, "model.txt", source, lambda b: b.decode())
        meta = decode_member(sample, "meta.json", source, json.loads)
        try:
            out = cls(key, prompt, frames, seed, digest, meta)
        except SampleError as exc:
            raise SampleError(f"{source}: {exc}") from exc
        return out


def iter_video_samples(urls: Iterable[str | Path], report: SkipReport | None = None) -> Iterator[SyntheticVideoSample]:
    """Decoded synthetic video samples of shards, in order, under the bad-item policy (data/bad_items.py): bad
    samples and unreadable shards are skipped and recorded in ``report``. Without ``report`` a default one is
    checked when the shards are exhausted (TooManyBadItems above 1 % or when nothing usable is left); with one,
    the caller calls ``report.check()``."""
    yield from iter_decoded(urls, SyntheticVideoSample.from_wds, report)
