"""Immutable, content-addressed artifact versions under an artifact root.

Layout for an asset (and optionally a partition)::

    ROOT/ASSET[/PARTITION]/
        versions/<digest[:16]>/     complete versions: files + manifest.json, never modified
        .staging/<token>/           in-progress writes (hidden; removed on failure or next run)
        LATEST.json                 pointer to the current version, replaced atomically

A run writes everything into a staging directory, writes the manifest last, then renames the
directory into ``versions/`` and swaps the pointer. A run killed at any point leaves either the old
version or the new one visible, never a partial one; re-running with the same seed produces the
same digest and so the same version directory.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from vfusion3d_core.data.files import atomic_write_bytes, pid_alive
from vfusion3d_core.data.manifest import MANIFEST_NAME, Manifest, ManifestError

LATEST_NAME = "LATEST.json"


@dataclass(frozen=True)
class ArtifactVersion:
    """A committed artifact: its directory and manifest."""

    path: Path
    manifest: Manifest

    @property
    def digest(self) -> str:
        return self.manifest.digest

    def shards(self, folder: str = "") -> list[Path]:
        """Sorted paths of the version's WebDataset tar shards (only those inside ``folder`` when given)."""
        return sorted(self.path / f.path for f in self.manifest.files
                      if f.path.endswith(".tar") and (not folder or f.path.startswith(f"{folder}/")))

    def csv_rows(self, name: str) -> list[dict[str, str]]:
        """The rows of the version's CSV file ``name`` (header row as keys)."""
        with open(self.path / name, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))

    def files_under(self, folder: str) -> list[Path]:
        """Sorted paths of the manifest's files inside ``folder`` (e.g. the "train" shards)."""
        return sorted(self.path / f.path for f in self.manifest.files if f.path.startswith(f"{folder}/"))


def default_tracking_uri(artifact_root: str | Path) -> str:
    """The pipeline's MLflow store when MLFLOW_TRACKING_URI is unset: sqlite under the artifact root."""
    return f"sqlite:///{os.path.abspath(os.path.join(artifact_root, 'mlflow.db'))}"


class ArtifactStore:
    """Local-filesystem artifact root."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def asset_dir(self, asset: str, partition: str | None = None) -> Path:
        for part in (asset, partition):
            if part is not None and (not part or "/" in part or part.startswith(".") or ".." in part):
                raise ValueError(f"invalid asset or partition name {part!r}")
        return self.root / asset / partition if partition else self.root / asset

    @contextmanager
    def staging(self, asset: str, partition: str | None = None) -> Iterator[Path]:
        """A fresh hidden directory to write a new version into; removed if the block raises."""
        path = self.asset_dir(asset, partition) / ".staging" / f"{os.getpid()}-{uuid.uuid4().hex}"
        path.mkdir(parents=True)
        try:
            yield path
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise

    def clean_staging(self, asset: str, partition: str | None = None) -> int:
        """Remove staging directories left by dead processes (killed runs); returns how many were removed.

        Directories of live processes on this machine (a concurrent run) are left alone.
        """
        staging = self.asset_dir(asset, partition) / ".staging"
        if not staging.is_dir():
            return 0
        leftovers = [p for p in staging.iterdir() if not pid_alive(p.name.split("-", 1)[0])]
        for p in leftovers:
            shutil.rmtree(p, ignore_errors=True)
        return len(leftovers)

    def commit(self, staging_dir: Path, manifest: Manifest, asset: str, partition: str | None = None
               ) -> ArtifactVersion:
        """Write the manifest into ``staging_dir``, publish it as a version and point LATEST at it.

        Commits of one asset/partition are serialized by an exclusive file lock, so two runs materializing
        the same partition at once publish whole versions one after the other (the same content twice
        gives one version), never an interleaving of both.
        """
        base = self.asset_dir(asset, partition)
        manifest.write(staging_dir)
        target = base / "versions" / manifest.digest[:16]
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(base / ".commit.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if target.exists():
                # Same content already published (identical re-run): keep the existing, verified copy.
                existing = Manifest.read(target / MANIFEST_NAME)
                if existing.digest != manifest.digest or existing.verify(target):
                    raise ManifestError(f"{target} exists but does not match the new version; refusing to overwrite")
                shutil.rmtree(staging_dir, ignore_errors=True)
            else:
                os.replace(staging_dir, target)
            pointer = {"version": target.name, "digest": manifest.digest, "run_id": manifest.run_id}
            atomic_write_bytes(base / LATEST_NAME, json.dumps(pointer, indent=2).encode())
        return ArtifactVersion(target, Manifest.read(target / MANIFEST_NAME))

    def latest(self, asset: str, partition: str | None = None) -> ArtifactVersion | None:
        """The current version, or None when the asset was never committed."""
        base = self.asset_dir(asset, partition)
        pointer = base / LATEST_NAME
        if not pointer.is_file():
            return None
        info = json.loads(pointer.read_text())
        path = base / "versions" / info["version"]
        manifest = Manifest.read(path / MANIFEST_NAME)
        if manifest.digest != info["digest"]:
            raise ManifestError(f"{pointer} points at digest {info['digest'][:12]} but {path} holds "
                                f"{manifest.digest[:12]}")
        return ArtifactVersion(path, manifest)

    def partitions(self, asset: str) -> list[str]:
        """Partition keys of ``asset`` that have a committed version, sorted."""
        base = self.asset_dir(asset)
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and p.name != "versions"
                      and (p / LATEST_NAME).is_file())

    def version_dirs(self, asset: str, partition: str | None = None) -> list[Path]:
        """Every committed version directory of ``asset`` (or one partition), sorted by name."""
        base = self.asset_dir(asset, partition) / "versions"
        return sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []

    def version(self, asset: str, digest: str, partition: str | None = None) -> ArtifactVersion:
        """A specific version by (a prefix of at least 16 chars of) its digest."""
        path = self.asset_dir(asset, partition) / "versions" / digest[:16]
        return ArtifactVersion(path, Manifest.read(path / MANIFEST_NAME))


