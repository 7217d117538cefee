"""The one manifest format: what an artifact contains, how it was made, and from which inputs.

``manifest.json`` lists every file with its sha256 and size, sample/row counts, the config, the
digests of the input artifacts, the code version and the Dagster run id. Its ``digest`` hashes the
content-defining fields only (not the run id or timestamp), so a re-run with the same seed, config
and inputs has the same digest. The digest is the asset's Dagster data version and the MLflow
dataset digest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vfusion3d_core.data.files import atomic_write_bytes
from vfusion3d_core.redact import redact

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
_CHUNK = 1 << 20


class ManifestError(ValueError):
    """A manifest that is missing, malformed, or does not match the files on disk."""


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON bytes (sorted keys, no whitespace variance)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the artifact directory, POSIX separators
    sha256: str
    bytes: int


@dataclass
class Manifest:
    """Description of one immutable artifact version."""

    asset: str
    files: list[FileEntry]
    counts: dict[str, int]
    config: dict[str, Any]
    inputs: dict[str, str] = field(default_factory=dict)  # input name -> manifest digest
    code_version: str = ""
    run_id: str | None = None
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        # Credentials come from the environment only and never land in a manifest (vfusion3d_core/redact.py).
        self.config = redact(self.config)

    @property
    def digest(self) -> str:
        """sha256 over the content-defining fields (files, counts, config, inputs, code version)."""
        content = {
            "asset": self.asset,
            "files": [asdict(f) for f in sorted(self.files, key=lambda f: f.path)],
            "counts": self.counts,
            "config": self.config,
            "inputs": self.inputs,
            "code_version": self.code_version,
            "format_version": self.format_version,
        }
        return hashlib.sha256(canonical_json(content)).hexdigest()

    def to_json(self) -> bytes:
        d = asdict(self)
        d["files"] = sorted(d["files"], key=lambda f: f["path"])
        d["digest"] = self.digest
        return json.dumps(d, indent=2, sort_keys=True, default=str).encode()

    @classmethod
    def from_json(cls, data: bytes | str, source: str = "manifest") -> Manifest:
        try:
            d = json.loads(data)
            stored_digest = d.pop("digest", None)
            d["files"] = [FileEntry(**f) for f in d["files"]]
            m = cls(**d)
        except (ValueError, TypeError, KeyError) as exc:
            raise ManifestError(f"{source}: malformed manifest: {exc}") from exc
        if stored_digest is not None and stored_digest != m.digest:
            raise ManifestError(f"{source}: stored digest {stored_digest[:12]} does not match its content "
                                f"({m.digest[:12]}); the manifest was edited")
        return m

    @classmethod
    def read(cls, path: str | Path) -> Manifest:
        path = Path(path)
        if not path.is_file():
            raise ManifestError(f"{path}: no manifest")
        return cls.from_json(path.read_bytes(), str(path))

    def write(self, directory: str | Path) -> Path:
        """Atomically write ``manifest.json`` into ``directory``."""
        path = Path(directory) / MANIFEST_NAME
        atomic_write_bytes(path, self.to_json())
        return path

    def file(self, relpath: str) -> FileEntry:
        for f in self.files:
            if f.path == relpath:
                return f
        raise KeyError(relpath)

    def verify(self, directory: str | Path) -> list[str]:
        """Re-hash every listed file under ``directory``; returns the problems found (empty = intact)."""
        problems = []
        for f in self.files:
            p = Path(directory) / f.path
            if not p.is_file():
                problems.append(f"missing: {f.path}")
            elif p.stat().st_size != f.bytes or sha256_file(p) != f.sha256:
                problems.append(f"changed: {f.path}")
        return problems


def file_entries(directory: str | Path, relpaths: list[str]) -> list[FileEntry]:
    """Hash the given files (relative to ``directory``) into manifest entries."""
    directory = Path(directory)
    return [FileEntry(r, sha256_file(directory / r), (directory / r).stat().st_size) for r in sorted(relpaths)]
