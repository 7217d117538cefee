"""``latest:ASSET[/PARTITION]``: a command-line shorthand for the current version of an asset under a local
artifact root, so a user need not copy a ``versions/<digest>`` path (``vfusion3d generate --checkpoint
latest:lrm_finetuned``, ``vfusion3d audit latest:lrm_finetuned``). Resolved through ``ArtifactStore.latest``:
the version ``LATEST.json`` points at, its manifest digest checked."""

from __future__ import annotations

import os
from pathlib import Path

from vfusion3d_core.data.artifacts import LATEST_NAME, ArtifactStore
from vfusion3d_core.data.manifest import ManifestError

LATEST_PREFIX = "latest:"


class LatestRefError(ValueError):
    """A ``latest:`` reference that names no committed version; says what is there."""


def default_artifact_root() -> str:
    """$VFUSION3D_ARTIFACT_ROOT, else ./artifacts (the pipeline's default)."""
    return os.environ.get("VFUSION3D_ARTIFACT_ROOT", "artifacts")


def is_latest_ref(text: str) -> bool:
    return str(text).startswith(LATEST_PREFIX)


def committed_assets(root: str | Path) -> list[str]:
    """Assets under ``root`` with a committed version (``ASSET`` or ``ASSET/PARTITION``), sorted."""
    store, found = ArtifactStore(root), []
    base = Path(root)
    if not base.is_dir():
        return []
    for asset in sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if (base / asset / LATEST_NAME).is_file():
            found.append(asset)
        found += [f"{asset}/{part}" for part in store.partitions(asset)]
    return found


def resolve_latest(ref: str, root: str | Path | None = None) -> Path:
    """``latest:ASSET`` or ``latest:ASSET/PARTITION`` -> the directory of that asset's current version under
    ``root`` (default: ``default_artifact_root()``). LatestRefError when there is none, naming what is there."""
    root = Path(root if root is not None else default_artifact_root())
    name = ref[len(LATEST_PREFIX):] if is_latest_ref(ref) else ref
    asset, _, partition = name.partition("/")
    try:
        version = ArtifactStore(root).latest(asset, partition or None)
    except (ValueError, ManifestError, OSError) as err:  # a bad name, a pointer that disagrees with its version
        raise LatestRefError(f"{ref}: {err}") from err
    if version is None:
        there = committed_assets(root)
        listing = ", ".join(there) if there else "none (materialize the asset first)"
        raise LatestRefError(f"{ref}: {name} has no committed version under {root}; committed there: {listing}")
    return version.path
