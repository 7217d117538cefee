"""Training samples for the LRM, streamed from multi-view WebDataset shards.

Each object yields one source view and ``views_per_sample`` supervision views, with all poses rotated
so the source camera becomes the canonical one (azimuth 0, elevation 0, same distance). Shards are
reshuffled every epoch and split across (rank, dataloader worker) slots; the stream is a pure
function of (seed, rank, worker, position), so a checkpoint only needs the number of batches consumed.

Bad items follow the bad-item policy (vfusion3d_core/data/bad_items.py): an undecodable sample or an unreadable
shard is skipped with a warning naming it and counted (``skip_report`` of the process that read it); an epoch
whose skipped share exceeds ``max_bad_fraction`` (or that left nothing usable) ends the run with TooManyBadItems.
A skipped sample still takes its place in the stream position, so a resumed run re-reads the k good samples
before its resume point only when k bad samples preceded it (resume skipping never decodes).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import IterableDataset, get_worker_info

from vfusion3d_core.cameras import look_at, to_render_vector, to_source_vector
from vfusion3d_core.data import BadItemPolicy, MultiviewSample, SampleError, SkipReport, iter_raw_samples


def canonicalize_poses(c2w: torch.Tensor, source_index: int) -> torch.Tensor:
    """Rigidly transform all poses c2w [V, 4, 4] so pose ``source_index`` becomes the canonical pose.

    The canonical pose sits at (d, 0, 0), d = the source camera's distance, looking at the origin with
    +z up. For cameras that look at the origin the transform is a pure rotation about the origin, so
    the object stays inside the box.
    """
    assert c2w.dim() == 3 and c2w.shape[1:] == (4, 4), c2w.shape
    source = c2w[source_index]
    distance = source[:3, 3].norm()
    canonical = look_at(torch.stack([distance, torch.zeros(()), torch.zeros(())])[None])[0]
    transform = canonical @ torch.linalg.inv(source)
    return transform @ c2w


def batches_for_worker(total_batches: int, num_workers: int, worker: int) -> int:
    """Batches worker ``worker`` produced when a DataLoader (in-order, round-robin) yielded ``total_batches``."""
    return total_batches // num_workers + (1 if worker < total_batches % num_workers else 0)


def stream_seed(*parts: object) -> int:
    """A 64-bit seed derived from ``parts`` (stable across processes and platforms)."""
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "little")


def in_stream_order(batches: Iterator[dict], workers: int, batches_done: int) -> Iterator[dict]:
    """A fresh DataLoader yields worker 0's batch first, but a stream resumed after ``batches_done`` batches
    must continue with worker ``batches_done % workers`` (batch k of an uninterrupted run is worker k % workers'
    batch k // workers). Reorders the loader's round-robin output accordingly (buffers < ``workers`` batches)."""
    if workers <= 1 or batches_done % workers == 0:
        yield from batches
        return
    queues: list[list[dict]] = [[] for _ in range(workers)]
    want = batches_done % workers
    for position, batch in enumerate(batches):
        queues[position % workers].append(batch)
        while queues[want]:
            yield queues[want].pop(0)
            want = (want + 1) % workers


# Bad items a stream item carries the count of (skipped since the previous item of its data slot), so a trainer
# reading through DataLoader workers can total them: kind -> batch key.
SKIP_COUNTS = {"sample": "skipped_samples", "shard": "skipped_shards"}


@dataclass
class StreamPosition:
    """Where a rank's stream resumes: batches already consumed (of ``batch_size`` samples each)."""

    batches: int = 0
    batch_size: int = 1


class MultiviewTrainingStream(IterableDataset):
    """Infinite stream of training dicts:

    source_image [3, S, S] in [0, 1] (composited on white), source_camera [16],
    render_cameras [M, 25], target_rgba [M, 4, H, W] straight alpha, backgrounds [M, 3], key.
    """

    def __init__(self, shards: list[str], views_per_sample: int, source_size: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1, position: StreamPosition | None = None,
                 random_background: bool = True, shuffle_buffer: int = 64, max_bad_fraction: float = 0.01) -> None:
        super().__init__()
        if not shards:
            raise ValueError("no shards to train on")
        self.shards = [str(s) for s in shards]
        self.views_per_sample = views_per_sample
        self.source_size = source_size
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.position = position or StreamPosition()
        self.random_background = random_background
        self.shuffle_buffer = max(1, shuffle_buffer)
        self.policy = BadItemPolicy(max_bad_fraction)
        # every bad shard / sample this process's iterators met (a DataLoader worker holds its own copy)
        self.skip_report = SkipReport(self.policy, what="training stream")

    def _slot(self) -> tuple[int, int, int, int]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        return self.rank * workers + worker, self.world_size * workers, workers, worker

    def _raw_epoch(self, epoch: int, slot: int, slots: int, report: SkipReport) -> Iterator[dict]:
        order = list(self.shards)
        random.Random(stream_seed(self.seed, "shards", epoch)).shuffle(order)
        if len(order) >= slots:  # shard-level split
            stream = iter_raw_samples(order[slot::slots], report)
        else:  # fewer shards than slots: every slot reads all, keeps every slots-th sample
            stream = (s for i, s in enumerate(iter_raw_samples(order, report)) if i % slots == slot)
        rng = random.Random(stream_seed(self.seed, "buffer", epoch, slot))
        buffer: list[dict] = []
        for raw in stream:
            buffer.append(raw)
            if len(buffer) >= self.shuffle_buffer:
                yield buffer.pop(rng.randrange(len(buffer)))
        rng.shuffle(buffer)
        yield from buffer

    def __iter__(self) -> Iterator[dict]:
        slot, slots, workers, worker = self._slot()
        skip = batches_for_worker(self.position.batches, workers, worker) * self.position.batch_size
        produced, epoch = 0, 0
        earlier = {kind: 0 for kind in SKIP_COUNTS}  # skips of this iterator's finished epochs
        sent = {kind: 0 for kind in SKIP_COUNTS}  # skips already attached to a yielded item
        while True:
            yielded_this_epoch = 0
            report = SkipReport(self.policy, what=f"training stream, data slot {slot}/{slots}, epoch {epoch}")
            for raw in self._raw_epoch(epoch, slot, slots, report):
                yielded_this_epoch += 1
                if produced >= skip:  # skipped samples are never decoded
                    gen = torch.Generator().manual_seed(stream_seed(self.seed, slot, produced))
                    try:
                        item = self.prepare(raw, gen)
                    except SampleError as exc:
                        url, key = raw.get("__url__", "?"), raw.get("__key__", "?")
                        report.skip("sample", url, key, str(exc).removeprefix(f"{url}:{key}: "))
                    else:
                        report.ok("sample")
                        for kind, name in SKIP_COUNTS.items():  # skips since the previous item, for the trainer
                            seen = earlier[kind] + report.skipped(kind)
                            item[name], sent[kind] = seen - sent[kind], seen
                        yield item
                produced += 1
            for kind in SKIP_COUNTS:
                earlier[kind] += report.skipped(kind)
            self.skip_report.merge(report)
            report.check()
            if yielded_this_epoch == 0:
                raise RuntimeError(f"data slot {slot}/{slots} received no samples: fewer samples than "
                                   "ranks x workers")
            epoch += 1

    def prepare(self, raw: dict, gen: torch.Generator) -> dict:
        """Decode one raw sample and turn it into a training dict (random views, backgrounds); SampleError for a
        bad sample (the stream skips and counts it)."""
        sample = MultiviewSample.from_wds(raw)
        v, m = sample.num_views, self.views_per_sample
        views = torch.from_numpy(sample.views).permute(0, 3, 1, 2).float() / 255.0  # [V, 4, S, S]
        c2w = torch.from_numpy(sample.c2w).float()
        intrinsics = torch.from_numpy(sample.intrinsics).float()
        source = int(torch.randint(v, (1,), generator=gen))
        targets = torch.randperm(v, generator=gen)[:m] if v >= m else torch.randint(v, (m,), generator=gen)
        c2w = canonicalize_poses(c2w, source)
        src = views[source]
        src_rgb = src[:3] * src[3:] + (1 - src[3:])  # white background, as at inference
        src_rgb = F.interpolate(src_rgb[None], size=(self.source_size,) * 2, mode="bilinear", antialias=True,
                                align_corners=False)[0].clamp(0, 1)
        backgrounds = torch.rand(m, 3, generator=gen) if self.random_background else torch.ones(m, 3)
        return {
            "source_image": src_rgb,
            "source_camera": to_source_vector(c2w[source], intrinsics[source]),
            "render_cameras": to_render_vector(c2w[targets], intrinsics[targets]),
            "target_rgba": views[targets],
            "backgrounds": backgrounds,
            "key": sample.key,
        }


def prepare_targets(target_rgba: torch.Tensor, backgrounds: torch.Tensor, size: int,
                    crop: tuple[int, int, int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize targets [N, M, 4, S, S] to ``size``, composite on backgrounds [N, M, 3], then crop.

    Returns rgb [N, M, 3, h, w] and mask [N, M, 1, h, w]. Resizing is done on premultiplied colour so
    edges do not bleed the (meaningless) colour of transparent pixels.
    """
    n, m = target_rgba.shape[:2]
    flat = target_rgba.flatten(0, 1)
    premult = torch.cat([flat[:, :3] * flat[:, 3:], flat[:, 3:]], 1)
    if premult.shape[-1] > size:  # box filter: keeps alpha = coverage exact
        premult = F.interpolate(premult, size=(size, size), mode="area")
    elif premult.shape[-1] < size:
        premult = F.interpolate(premult, size=(size, size), mode="bilinear", align_corners=False)
    premult = premult.clamp(0, 1).reshape(n, m, 4, size, size)
    alpha = premult[:, :, 3:]
    rgb = premult[:, :, :3] + (1 - alpha) * backgrounds[:, :, :, None, None]
    if crop is not None:
        top, left, h, w = crop
        rgb, alpha = rgb[..., top:top + h, left:left + w], alpha[..., top:top + h, left:left + w]
    return rgb, alpha
