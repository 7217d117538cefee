"""WebDataset tar shards: a writer whose shards appear only when complete, and readers."""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType

import webdataset as wds

from vfusion3d_core.data.artifacts import pid_alive
from vfusion3d_core.data.s3_store import register_webdataset_scheme, remote_tar_problem
from vfusion3d_core.data.sample import MultiviewSample, SampleError

SHARD_PATTERN = "shard-{index:06d}.tar"


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


def _raise_shard_error(exc: Exception) -> bool:
    raise ShardError(str(exc)) from exc


def iter_raw_samples(urls: Iterable[str | Path]) -> Iterator[dict]:
    """Raw samples (member suffix -> bytes) of shards in order, through WebDataset.

    Truncated or malformed tars raise ShardError naming the shard. ``s3://`` URLs are streamed through
    boto3 (vfusion3d_core/data/s3_store.py).
    """
    register_webdataset_scheme()
    for url in urls:
        url = str(url)
        _check_tar(url)
        # Callers split shards across ranks/workers themselves, so WebDataset must not split again.
        dataset = wds.WebDataset(url, shardshuffle=False, handler=_raise_shard_error, empty_check=False,
                                 nodesplitter=_all_shards, workersplitter=_all_shards)
        try:
            yield from dataset
        except ShardError as exc:
            raise ShardError(f"{url}: {exc}") from exc


def iter_samples(urls: Iterable[str | Path]) -> Iterator[MultiviewSample]:
    """Decoded MultiviewSamples of shards in order."""
    for raw in iter_raw_samples(urls):
        yield MultiviewSample.from_wds(raw)


def _check_tar(path: str) -> None:
    """Reject truncated/malformed tars and unsafe members before streaming them. Remote ``s3://`` shards
    get the cheap checks (whole blocks, end-of-archive marker); WebDataset refuses bad members as it reads."""
    if path.startswith("s3://"):
        problem = remote_tar_problem(path)
        if problem:
            raise ShardError(f"{path}: {problem}")
        return
    if "://" in path:
        return
    try:
        with tarfile.open(path, "r:") as tf:
            for member in tf:
                name = member.name
                if not member.isfile():
                    raise ShardError(f"{path}: member {name!r} is not a regular file")
                if name.startswith("/") or ".." in Path(name).parts:
                    raise ShardError(f"{path}: unsafe member path {name!r}")
            end = tf.offset  # where the member list stopped: the end-of-archive marker must follow
        with open(path, "rb") as f:
            f.seek(end)
            marker = f.read(2 * tarfile.BLOCKSIZE)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ShardError(f"{path}: unreadable tar shard: {exc}") from exc
    if len(marker) < 2 * tarfile.BLOCKSIZE or marker.count(0) != len(marker):
        # A tar cut at a member boundary reads as a shorter valid archive; only the marker tells.
        raise ShardError(f"{path}: truncated tar shard (no end-of-archive marker after byte {end})")


def count_samples(path: str | Path) -> int:
    """Number of distinct sample keys in a shard (validates it as a tar)."""
    _check_tar(str(path))
    with tarfile.open(path, "r:") as tf:
        return len({m.name.split("/")[-1].split(".", 1)[0] for m in tf})
