"""WebDataset tar shards: a writer whose shards appear only when complete, and readers."""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import webdataset as wds

from vfusion3d_core.data.bad_items import SkipReport
from vfusion3d_core.data.files import pid_alive
from vfusion3d_core.data.s3_store import register_webdataset_scheme, remote_tar_problem
from vfusion3d_core.data.sample import MultiviewSample, SampleError

SHARD_PATTERN = "shard-{index:06d}.tar"
T = TypeVar("T")


class ShardError(ValueError):
    """A shard that cannot be read (truncated, malformed, or holding invalid samples)."""


class ShardWriter:
    """Writes samples into ``directory/prefix-000000.tar``, ``-000001.tar``, ... rolling every N samples.

    Each shard is written to a hidden temporary file and renamed into place when closed, so a
    visible shard is always complete. Tar headers use a fixed mtime so equal samples give
    byte-identical shards.
    """

    def __init__(self, directory: str | Path, samples_per_shard: int = 64, prefix: str = "shard") -> None:
        if samples_per_shard < 1:
            raise ValueError("samples_per_shard must be >= 1")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.samples_per_shard = samples_per_shard
        self.prefix = prefix
        self.shards: list[Path] = []
        self.counts: list[int] = []
        self._writer: wds.TarWriter | None = None
        self._stream = None
        self._tmp: Path | None = None
        self._final: Path | None = None
        self._keys: set[str] = set()
        self._clean_dead_temporaries()

    def _clean_dead_temporaries(self) -> None:
        """Remove hidden temporary shards left by killed writers (their pid is gone); never a live one."""
        for tmp in self.directory.glob(f".{self.prefix}-*.tar.tmp-*"):
            if not pid_alive(tmp.name.rsplit("-", 1)[-1]):
                tmp.unlink(missing_ok=True)

    def write(self, sample: MultiviewSample) -> None:
        """Append one sample; keys must be unique across the whole writer."""
        if sample.key in self._keys:
            raise SampleError(f"duplicate sample key {sample.key!r}")
        if self._writer is None:
            self._open()
        assert self._writer is not None
        self._writer.write(sample.to_wds())
        self._keys.add(sample.key)
        self.counts[-1] += 1
        if self.counts[-1] >= self.samples_per_shard:
            self._close_shard()

    def _open(self) -> None:
        index = len(self.shards)
        self._final = self.directory / f"{self.prefix}-{index:06d}.tar"
        self._tmp = self.directory / f".{self._final.name}.tmp-{os.getpid()}"
        self._stream = open(self._tmp, "wb")  # noqa: SIM115  (lives until the shard is closed)
        self._writer = wds.TarWriter(self._stream, mtime=0.0, user="vfusion3d", group="vfusion3d")
        self.counts.append(0)
        self.shards.append(self._final)

    def _close_shard(self) -> None:
        assert self._writer is not None and self._stream is not None and self._tmp and self._final
        self._writer.close()
        if not self._stream.closed:
            self._stream.flush()
            os.fsync(self._stream.fileno())
            self._stream.close()
        os.replace(self._tmp, self._final)
        self._writer = self._stream = self._tmp = self._final = None

    def close(self) -> None:
        """Finish the open shard (if any)."""
        if self._writer is not None:
            self._close_shard()

    def abort(self) -> None:
        """Drop the open shard's temporary file (completed shards stay)."""
        if self._writer is not None:
            try:
                self._writer.close()
            finally:
                if self._tmp is not None:
                    self._tmp.unlink(missing_ok=True)
                self._writer = self._stream = self._tmp = self._final = None
                self.shards.pop()
                self.counts.pop()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _all_shards(urls: Iterable) -> Iterable:
    return urls


def iter_raw_samples(urls: Iterable[str | Path], report: SkipReport | None = None) -> Iterator[dict]:
    """Raw samples (member suffix -> bytes, ``__key__``, ``__url__``) of shards in order, through WebDataset, under
    the bad-item policy (data/bad_items.py).

    A shard that cannot be read at all (not a tar, empty, unsafe or non-regular members: never extracted) is
    skipped whole; a truncated shard yields the samples before the truncation and the rest of it is recorded as
    skipped; later shards are read either way. Each shard counts as one good or bad ``shard`` item in
    ``report``. Without ``report`` a default one is checked when the shards are exhausted (TooManyBadItems above
    1 % bad shards or when none was readable); with one, the caller calls ``report.check()``. ``s3://`` URLs are
    streamed through boto3 (vfusion3d_core/data/s3_store.py).
    """
    own = report is None
    report = report if report is not None else SkipReport(what="reading shards")
    register_webdataset_scheme()
    for url in urls:
        url = str(url)
        unusable, truncated = _scan_tar(url)
        if unusable:
            report.skip("shard", url, "whole shard", unusable)
            continue
        errors: list[str] = []

        def record(exc: Exception, errors: list[str] = errors) -> bool:
            # WebDataset appends " @ <stream repr>" to the message; the shard is named by the report already
            first = str(exc.args[0]) if exc.args else ""
            errors.append(f"{type(exc).__name__}: {first.split(' @ ')[0]}")
            return True  # WebDataset goes on with what follows (here: the end of this shard)

        # Callers split shards across ranks/workers themselves, so WebDataset must not split again.
        dataset = wds.WebDataset(url, shardshuffle=False, handler=record, empty_check=False,
                                 nodesplitter=_all_shards, workersplitter=_all_shards)
        read = 0
        for raw in dataset:
            read += 1
            yield raw
        if truncated or errors:
            reasons = truncated or "; ".join(dict.fromkeys(errors))  # the scan's reason covers the reader's
            report.skip("shard", url, f"after sample {read}", f"{reasons} (the rest of the shard is lost)")
        else:
            report.ok("shard")
    if own:
        report.check()


def iter_decoded(urls: Iterable[str | Path], decode: Callable[[dict], T],
                 report: SkipReport | None = None) -> Iterator[T]:
    """``decode(raw)`` of every raw sample of the shards; a sample that raises SampleError is skipped and recorded
    in ``report`` (one ``sample`` item, named by shard and key, with the reason). Shard problems are handled by
    iter_raw_samples. Without ``report`` a default one is checked at the end (see iter_raw_samples)."""
    own = report is None
    report = report if report is not None else SkipReport(what="reading samples")
    for raw in iter_raw_samples(urls, report):
        try:
            item = decode(raw)
        except SampleError as exc:
            url, key = raw.get("__url__", "?"), raw.get("__key__", "?")
            report.skip("sample", url, key, str(exc).removeprefix(f"{url}:{key}: "))
            continue
        report.ok("sample")
        yield item
    if own:
        report.check()


def iter_samples(urls: Iterable[str | Path], report: SkipReport | None = None) -> Iterator[MultiviewSample]:
    """Decoded MultiviewSamples of shards in order, bad samples and shards skipped under the bad-item policy
    (see iter_decoded)."""
    yield from iter_decoded(urls, MultiviewSample.from_wds, report)


def _scan_tar(path: str) -> tuple[str | None, str | None]:
    """(why the whole shard is unusable, why it is truncated), each None when fine. Local tars are read member by
    member (headers only); unsafe names (absolute, ``..``) and non-regular members make the shard unusable, all of
    them named. Remote ``s3://`` shards get the cheap checks (whole blocks, end-of-archive marker)."""
    if path.startswith("s3://"):
        return remote_tar_problem(path), None
    if "://" in path:
        return None, None
    unsafe: list[str] = []
    members = 0
    try:
        tf = tarfile.open(path, "r:")  # noqa: SIM115  (closed by the with block below)
    except (tarfile.TarError, OSError, EOFError) as exc:
        return f"unreadable tar shard: {exc}", None
    with tf:
        try:
            for member in tf:
                members += 1
                name = member.name
                if not member.isfile():
                    unsafe.append(f"member {name!r} is not a regular file")
                elif name.startswith("/") or ".." in Path(name).parts:
                    unsafe.append(f"unsafe member path {name!r}")
        except (tarfile.TarError, OSError, EOFError) as exc:
            if unsafe:
                return "; ".join(unsafe), None
            if members == 0:
                return f"unreadable tar shard: {exc}", None
            return None, f"truncated tar shard (unreadable after {members} member(s): {exc})"
        end = tf.offset  # where the member list stopped: the end-of-archive marker must follow
    if unsafe:
        return "; ".join(unsafe) + " (refused, nothing extracted)", None
    with open(path, "rb") as f:
        f.seek(end)
        marker = f.read(2 * tarfile.BLOCKSIZE)
    if len(marker) < 2 * tarfile.BLOCKSIZE or marker.count(0) != len(marker):
        # A tar cut at a member boundary reads as a shorter valid archive; only the marker tells.
        return None, f"truncated tar shard (no end-of-archive marker after byte {end})"
    return None, None


def _check_tar(path: str) -> None:
    """Raise ShardError naming the shard when it is unusable or truncated (count_samples)."""
    unusable, truncated = _scan_tar(path)
    if unusable or truncated:
        raise ShardError(f"{path}: {unusable or truncated}")


def count_samples(path: str | Path) -> int:
    """Number of distinct sample keys in a shard (validates it as a tar)."""
    _check_tar(str(path))
    with tarfile.open(path, "r:") as tf:
        return len({m.name.split("/")[-1].split(".", 1)[0] for m in tf})
