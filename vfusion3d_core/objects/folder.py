"""Load a folder of .glb/.gltf/.obj/.ply meshes (Objaverse / Cap3D style) with an optional captions CSV."""

from __future__ import annotations

import csv
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vfusion3d_core.objects.mesh import ColoredMesh, MeshError, normalize_into_box
from vfusion3d_core.objects.mesh_file import UP_AXES, read_mesh_file

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


def load_mesh_folder(folder: str | Path, captions_csv: str | Path | None = None,
                     caption_issues: CaptionIssues | None = None, *, up_axis: str = "y"
                     ) -> tuple[list[ColoredMesh], list[SkippedFile]]:
    """Load every mesh under ``folder``. Bad files are reported in the second list and skipped.

    ``up_axis`` ("y" or "z") is the up axis of the OBJ and PLY files (glTF is Y-up by specification).

    Captions come from ``captions_csv`` (or ``captions.csv`` in the folder when present); a mesh
    without a caption gets its file name as caption. Caption rows that are not used as given (uids matching
    no mesh file, empty captions, malformed or repeated rows) are listed by line, with their count, in one
    ``CaptionWarning``; pass ``caption_issues`` to receive them (and their ``count``) as data too.
    """
    if up_axis not in UP_AXES:  # checked once here: inside the loop it would become every file's skip reason
        raise ValueError(f"up_axis must be one of {UP_AXES}, got {up_axis!r}")
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"mesh folder {folder} does not exist")
    if captions_csv is None and (folder / "captions.csv").is_file():
        captions_csv = folder / "captions.csv"
    issues = CaptionIssues() if caption_issues is None else caption_issues
    captions = read_captions(Path(captions_csv), issues) if captions_csv else {}
    files, skipped = list_mesh_files(folder)
    meshes: list[ColoredMesh] = []
    seen: set[str] = set()
    for path in files:
        uid = uid_for_path(path)
        if uid in seen:
            skipped.append(SkippedFile(str(path), f"duplicate uid {uid!r}"))
            continue
        caption = captions.get(path.stem) or captions.get(uid) or path.stem.replace("_", " ")
        try:
            meshes.append(load_mesh_file(path, uid, caption, up_axis=up_axis))
            seen.add(uid)
        except MeshError as exc:
            skipped.append(SkippedFile(str(path), str(exc)))
        except Exception as exc:  # one file's unexpected failure never ends the folder (bad-item policy)
            skipped.append(SkippedFile(str(path), f"cannot convert mesh: {type(exc).__name__}: {exc}"))
    if captions_csv:
        known = {p.stem for p in files} | {uid_for_path(p) for p in files}
        issues.unknown = sorted((issues.line_of[uid], uid) for uid in captions if uid not in known)
        if issues.count:
            warnings.warn(issues.describe(captions_csv), CaptionWarning, stacklevel=2)
    return meshes, skipped
