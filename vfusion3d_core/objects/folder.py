"""Mesh files of a source folder (Objaverse / Cap3D style): listing them, reading a captions CSV, loading one file.

A whole folder is loaded by ``load_mesh_folder`` in ``listing.py``, on the listing's own caption matching."""

from __future__ import annotations

import csv
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the mesh modules (trimesh) are imported by load_mesh_file: listing a folder needs none
    from vfusion3d_core.objects.mesh import ColoredMesh

MESH_SUFFIXES = (".glb", ".gltf", ".obj", ".ply")
MAX_MESH_BYTES = 512 * 1024 * 1024
MIN_SURFACE_AREA = 1e-6  # of the mesh normalized into the 0.8-radius ball (a visible object has ~0.1 or more)


@dataclass(frozen=True)
class SkippedFile:
    """A file of the source folder that was not used, and why."""

    path: str
    reason: str


def uid_for_path(path: Path) -> str:
    """A WebDataset-safe uid from a file name (no dots or slashes)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", path.stem) or "mesh"


class CaptionWarning(UserWarning):
    """Rows of a captions CSV that were not used (unknown uid, empty caption, malformed or repeated row)."""


@dataclass
class CaptionIssues:
    """Problems found in a captions CSV, each as (line number, uid); line numbers are 1-based file lines."""

    malformed: list[int] = field(default_factory=list)  # fewer than two columns
    empty: list[tuple[int, str]] = field(default_factory=list)  # caption blank after whitespace folding
    duplicate: list[tuple[int, str]] = field(default_factory=list)  # uid seen on an earlier line (later wins)
    unknown: list[tuple[int, str]] = field(default_factory=list)  # uid matching no mesh file of the folder
    line_of: dict[str, int] = field(default_factory=dict)  # uid -> line of its caption row (the last one)

    @property
    def count(self) -> int:
        """Number of reported rows."""
        return len(self.malformed) + len(self.empty) + len(self.duplicate) + len(self.unknown)

    def describe(self, csv_path: str | Path) -> str:
        """One message listing every reported row by line."""
        parts = []
        if self.malformed:
            parts.append(f"{len(self.malformed)} malformed (fewer than 2 columns) on line(s) {_lines(self.malformed)}")
        if self.empty:
            parts.append(f"{len(self.empty)} empty caption(s): {_rows(self.empty)} (file names used instead)")
        if self.duplicate:
            parts.append(f"{len(self.duplicate)} repeated uid(s): {_rows(self.duplicate)} (the later row wins)")
        if self.unknown:
            parts.append(f"{len(self.unknown)} uid(s) matching no mesh file: {_rows(self.unknown)}")
        return f"{csv_path}: {self.count} caption row(s) not used as given: " + "; ".join(parts)


def _lines(lines: list[int], limit: int = 20) -> str:
    shown = ", ".join(str(n) for n in lines[:limit])
    return shown + (f", ... (+{len(lines) - limit} more)" if len(lines) > limit else "")


def _rows(rows: list[tuple[int, str]], limit: int = 20) -> str:
    shown = ", ".join(f"line {n} {uid!r}" for n, uid in rows[:limit])
    return shown + (f", ... (+{len(rows) - limit} more)" if len(rows) > limit else "")


def read_captions(csv_path: Path, issues: CaptionIssues | None = None) -> dict[str, str]:
    """uid -> caption from a CSV with columns ``uid,caption`` (header optional).

    Rows that are malformed, have an empty caption or repeat a uid are recorded in ``issues`` (when given)
    with their line number; empty captions are not returned (the mesh falls back to its file name)."""
    issues = CaptionIssues() if issues is None else issues
    captions: dict[str, str] = {}
    lines = issues.line_of
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue  # blank line
            if not lines and not issues.malformed and not issues.empty and row[0].strip().lower() == "uid":
                continue  # header
            if len(row) < 2:
                issues.malformed.append(line)
                continue
            uid, caption = row[0].strip(), " ".join(row[1].split())
            if not caption:
                issues.empty.append((line, uid))
                continue
            if uid in lines:
                issues.duplicate.append((line, uid))
            captions[uid], lines[uid] = caption, line
    return captions


def list_mesh_files(folder: Path) -> tuple[list[Path], list[SkippedFile]]:
    """Mesh files under ``folder`` (recursive, sorted). Symlinks leaving the folder are never followed."""
    root = folder.resolve()
    files, skipped = [], []
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in MESH_SUFFIXES:
            continue
        if path.is_symlink():
            try:
                target = path.resolve(strict=True)
            except (OSError, RuntimeError):  # dangling link or a loop (RuntimeError before Python 3.13)
                skipped.append(SkippedFile(str(path), "broken or looping symlink"))
                continue
            if not target.is_relative_to(root):
                skipped.append(SkippedFile(str(path), "symlink pointing outside the source folder"))
                continue
        if path.is_file():
            files.append(path)
    return files, skipped


class MeshNoteWarning(UserWarning):
    """Content of a mesh file that was not used (line/point elements, unsupported extensions, missing textures)."""


def load_mesh_file(path: Path, uid: str, caption: str, *, up_axis: str = "y") -> ColoredMesh:
    """Load one mesh file as a normalized, Z-up ColoredMesh; raises MeshError with the reason on failure.

    glTF is always turned from Y-up to Z-up; ``up_axis`` ("y" or "z") is the up axis of OBJ and PLY files.
    Content that could not be used is listed in ``mesh.meta["notes"]`` and warned as a MeshNoteWarning.
    """
    from vfusion3d_core.objects.mesh import MeshError, normalize_into_box
    from vfusion3d_core.objects.mesh_file import read_mesh_file

    size = path.stat().st_size
    if size == 0:
        raise MeshError("empty file")
    if size > MAX_MESH_BYTES:
        raise MeshError(f"file too large ({size} bytes > {MAX_MESH_BYTES})")
    mesh = normalize_into_box(read_mesh_file(path, uid, caption, up_axis=up_axis))
    tri = mesh.vertices[mesh.faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum()
    if not area > MIN_SURFACE_AREA:  # e.g. every triangle collinear: nothing would be rendered
        raise MeshError(f"degenerate mesh (surface area {area:.2g} after normalization)")
    if mesh.meta["notes"]:
        warnings.warn(f"{path.name}: not used: " + "; ".join(mesh.meta["notes"]), MeshNoteWarning, stacklevel=2)
    return mesh
