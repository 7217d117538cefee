"""The source-object listing: which 3D objects exist, their captions, their split and their partition.

A listing is built once from a source and published (the `source_objects` artifact); rendering then runs per
partition of ``objects_per_partition`` rows, so 100,000 objects render on many workers and a killed run redoes
only its unfinished partitions. Sources:

* ``procedural``: the seeded procedural world (location ``procedural:<index>``);
* ``folder``: every .glb/.gltf/.obj/.ply under a folder, captions from a ``uid,caption`` CSV (Cap3D's layout);
* ``listing``: a CSV or Parquet table with a location column (``path``, ``uri``, ``file``, ``location`` or
  ``url``: a local path, relative to the table's folder, or an ``s3://`` URI) and optional ``uid`` and
  ``caption`` columns (the layout of Objaverse / Cap3D exports).

Growth is append-only: given the previous listing built with the same split settings, every listed object keeps
its row (split and partition); new objects are appended as training objects in new partitions. Published
partitions therefore never change, and the held-out set is fixed when first drawn.
"""

from __future__ import annotations

import csv
import hashlib
import json
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from vfusion3d_core.objects.folder import (
    CaptionIssues,
    CaptionWarning,
    SkippedFile,
    list_mesh_files,
    load_mesh_file,
    read_captions,
    uid_for_path,
)

if TYPE_CHECKING:  # the mesh modules (trimesh) are imported where meshes are built: listing needs none
    from vfusion3d_core.objects.mesh import ColoredMesh

SOURCES = ("procedural", "folder", "listing")
LOCATION_COLUMNS = ("path", "uri", "file", "location", "url")
PROCEDURAL_PREFIX = "procedural:"
LISTING_COLUMNS = ("uid", "location", "caption", "split", "partition")


@dataclass
class ObjectListingConfig:
    """Where the objects come from and how they are split and partitioned."""

    source: Literal["procedural", "folder", "listing"] = "procedural"
    folder: str | None = None  # source="folder"
    listing: str | None = None  # source="listing": a .csv / .parquet table
    captions_csv: str | None = None  # source="folder": uid,caption rows (default: captions.csv in the folder)
    num_objects: int = 64  # training objects (folder / listing: at most this many, 0 = all)
    num_heldout: int = 16
    seed: int = 0  # the procedural world and the held-out draw
    objects_per_partition: int = 40
    up_axis: Literal["y", "z"] = "y"  # of OBJ / PLY files (glTF is Y-up by specification)

    def __post_init__(self) -> None:
        from vfusion3d_core.objects.mesh_file import UP_AXES

        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        if self.source == "folder" and not self.folder:
            raise ValueError("source='folder' needs `folder`")
        if self.source == "listing" and not self.listing:
            raise ValueError("source='listing' needs `listing` (a .csv or .parquet file)")
        if self.num_objects < 0 or self.num_heldout < 0 or self.objects_per_partition < 1:
            raise ValueError(f"invalid sizes in {self}")
        if self.up_axis not in UP_AXES:
            raise ValueError(f"up_axis must be one of {UP_AXES}, got {self.up_axis!r}")

    def split_settings(self) -> dict:
        """The settings that decide rows' split and partition: a previous listing is grown only when they match."""
        return {k: getattr(self, k) for k in ("source", "folder", "listing", "num_heldout", "seed",
                                               "objects_per_partition")}


@dataclass(frozen=True)
class ListedObject:
    """One source object: ``location`` is a local path, an ``s3://`` URI or ``procedural:<index>``."""

    uid: str
    location: str
    caption: str
    split: str  # "train" | "heldout"
    partition: str  # "objects-000000", ...


@dataclass
class ObjectListing:
    """The rows of a listing (partition order), the source entries not listed and the caption problems."""

    rows: list[ListedObject]
    skipped: list[SkippedFile] = field(default_factory=list)
    caption_issues: CaptionIssues = field(default_factory=CaptionIssues)
    grown_from: int = 0  # rows kept from the previous listing

    @property
    def partitions(self) -> list[str]:
        """Partition keys in order."""
        return sorted({r.partition for r in self.rows})

    def counts(self) -> dict[str, int]:
        return {"objects": len(self.rows), "train_objects": sum(r.split == "train" for r in self.rows),
                "heldout_objects": sum(r.split == "heldout" for r in self.rows), "partitions": len(self.partitions),
                "skipped_sources": len(self.skipped), "kept_from_previous": self.grown_from}


def partition_key(index: int) -> str:
    return f"objects-{index:06d}"


def partition_digest(rows: Iterable[ListedObject]) -> str:
    """Identifies a partition's content: a render made for other rows is stale."""
    return hashlib.sha256(json.dumps([asdict(r) for r in rows], sort_keys=True).encode()).hexdigest()


def object_seed(seed: int, uid: str) -> int:
    """A per-object seed (held-out draw, render elevation) that depends on the uid only, not on list order."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{uid}".encode()).digest()[:8], "little") & ((1 << 63) - 1)


def caption_key(text: str) -> str:
    """The exact-match key of a caption, as the leakage check compares them (imported here, not at module level:
    vfusion3d_core.metrics loads the LRM)."""
    from vfusion3d_core.metrics.leakage import caption_key as key

    return key(text)


def build_listing(cfg: ObjectListingConfig, previous: list[ListedObject] | None = None) -> ObjectListing:
    """The listing of ``cfg``'s source; ``previous`` (built with the same ``split_settings``) is grown, not redrawn."""
    if cfg.source == "procedural":
        entries, skipped, issues = _procedural_entries(cfg), [], CaptionIssues()
    elif cfg.source == "folder":
        entries, skipped, issues = _folder_entries(cfg)
    else:
        entries, skipped = _table_entries(Path(cfg.listing))  # type: ignore[arg-type]
        issues = CaptionIssues()
    if previous:
        return _grow(cfg, previous, entries, skipped, issues)
    # (uid, location, caption, split or None): a seeded draw decides the held-out objects, independent of file names
    if cfg.source == "procedural":
        heldout = [e for e in entries if e[3] == "heldout"]
        train = [e for e in entries if e[3] == "train"]
    else:
        order = sorted(entries, key=lambda e: object_seed(cfg.seed, e[0]))
        # held-out objects are drawn among captions that occur once in the source, so no training object has a
        # held-out object's caption (a real dataset repeats captions such as "a wooden chair")
        repeats = Counter(caption_key(e[2]) for e in entries)
        heldout = [e for e in order if repeats[caption_key(e[2])] == 1][: cfg.num_heldout]
        held = {e[0] for e in heldout}
        train = [e for e in order if e[0] not in held]
        if cfg.num_objects:
            train = train[: cfg.num_objects]
    ordered = [(e, "heldout") for e in heldout] + [(e, "train") for e in train]
    rows = [ListedObject(e[0], e[1], e[2], split, partition_key(i // cfg.objects_per_partition))
            for i, (e, split) in enumerate(ordered)]
    return ObjectListing(rows, skipped, issues)


def _grow(cfg: ObjectListingConfig, previous: list[ListedObject], entries: list[tuple], skipped: list[SkippedFile],
          issues: CaptionIssues) -> ObjectListing:
    rows = list(previous)
    known = {r.uid for r in rows}
    # a new training object must not repeat a held-out object's caption (procedural: its combination)
    held_captions = {caption_key(r.caption): r.uid for r in rows if r.split == "heldout"}
    new = []
    for e in entries:
        if e[0] in known or e[3] == "heldout":
            continue
        if caption_key(e[2]) in held_captions:
            owner = held_captions[caption_key(e[2])]
            skipped.append(SkippedFile(e[1], f"caption {e[2]!r} is the caption of held-out object {owner}"))
            continue
        new.append(e)
    if cfg.source != "procedural":
        new.sort(key=lambda e: object_seed(cfg.seed, e[0]))
    if cfg.num_objects:
        room = cfg.num_objects - sum(r.split == "train" for r in rows)
        new = new[: max(room, 0)]
    first = max(int(r.partition.rsplit("-", 1)[1]) for r in rows) + 1 if rows else 0
    rows += [ListedObject(e[0], e[1], e[2], "train", partition_key(first + i // cfg.objects_per_partition))
             for i, e in enumerate(new)]
    return ObjectListing(rows, skipped, issues, grown_from=len(previous))


def _procedural_entries(cfg: ObjectListingConfig) -> list[tuple[str, str, str, str]]:
    from vfusion3d_core.objects.procedural import ProceduralObjectGenerator, split_train_heldout

    gen = ProceduralObjectGenerator(cfg.seed)
    train, heldout = split_train_heldout(gen, cfg.num_objects, cfg.num_heldout)
    return ([(gen.uid(i), f"{PROCEDURAL_PREFIX}{i}", gen.spec(i).caption, "train") for i in train]
            + [(gen.uid(i), f"{PROCEDURAL_PREFIX}{i}", gen.spec(i).caption, "heldout") for i in heldout])


def _folder_entries(cfg: ObjectListingConfig) -> tuple[list[tuple], list[SkippedFile], CaptionIssues]:
    issues = CaptionIssues()
    files, skipped = _folder_files(Path(cfg.folder), cfg.captions_csv, issues, stacklevel=4)  # type: ignore[arg-type]
    return [(uid, str(path.resolve()), caption, None) for path, uid, caption in files], skipped, issues


def _folder_files(folder: Path, captions_csv: str | Path | None, issues: CaptionIssues, stacklevel: int
                  ) -> tuple[list[tuple[Path, str, str]], list[SkippedFile]]:
    """(file, uid, caption) of every mesh file under ``folder`` (file order), and the files not listed.

    The one caption matching of a folder: captions come from ``captions_csv`` (or ``captions.csv`` in the folder
    when present), by file stem or uid; a file without one is captioned by its name. Caption rows not used as
    given are recorded in ``issues`` and warned once as a CaptionWarning (``stacklevel`` names the caller)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"mesh folder {folder} does not exist")
    if captions_csv is None and (folder / "captions.csv").is_file():
        captions_csv = folder / "captions.csv"
    captions = read_captions(Path(captions_csv), issues) if captions_csv else {}
    files, skipped = list_mesh_files(folder)
    listed, seen = [], set()
    for path in files:
        uid = uid_for_path(path)
        if uid in seen:
            skipped.append(SkippedFile(str(path), f"duplicate uid {uid!r}"))
            continue
        seen.add(uid)
        listed.append((path, uid, captions.get(path.stem) or captions.get(uid) or path.stem.replace("_", " ")))
    if captions_csv:
        known = {p.stem for p in files} | seen
        issues.unknown = sorted((issues.line_of[u], u) for u in captions if u not in known)
        if issues.count:
            warnings.warn(issues.describe(captions_csv), CaptionWarning, stacklevel=stacklevel)
    return listed, skipped


def _table_entries(table: Path) -> tuple[list[tuple], list[SkippedFile]]:
    """(uid, location, caption, None) from a CSV / Parquet listing; bad rows are skipped by line."""
    if not table.is_file():
        raise FileNotFoundError(f"object listing {table} does not exist")
    records = _read_table(table)
    columns = set(records[0]) if records else set()
    location_col = next((c for c in LOCATION_COLUMNS if c in columns), None)
    if records and location_col is None:
        raise ValueError(f"{table}: no location column; expected one of {LOCATION_COLUMNS}, found {sorted(columns)}")
    entries, skipped, seen = [], [], set()
    for line, rec in enumerate(records, start=2):  # line 1 is the header
        where = f"{table}:{line}"
        location = str(rec.get(location_col) or "").strip()
        if not location:
            skipped.append(SkippedFile(where, "empty location"))
            continue
        if not location.startswith("s3://"):
            path = Path(location) if Path(location).is_absolute() else table.parent / location
            if not path.is_file():
                skipped.append(SkippedFile(where, f"no such file {location!r}"))
                continue
            location = str(path.resolve())
        uid = str(rec.get("uid") or "").strip() or uid_for_path(Path(location.rsplit("/", 1)[-1]))
        uid = uid_for_path(Path(uid + ".x"))  # WebDataset-safe, as file-derived uids
        if uid in seen:
            skipped.append(SkippedFile(where, f"duplicate uid {uid!r}"))
            continue
        seen.add(uid)
        caption = " ".join(str(rec.get("caption") or "").split()) or uid.replace("_", " ")
        entries.append((uid, location, caption, None))
    return entries, skipped


def _read_table(table: Path) -> list[dict]:
    if table.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(table).to_pylist()
    with open(table, newline="", encoding="utf-8") as f:
        return [{(k or "").strip().lower(): v for k, v in row.items()} for row in csv.DictReader(f)]


def write_listing(listing: ObjectListing, path: Path) -> None:
    """The rows as a Parquet table with columns ``LISTING_COLUMNS`` (partition order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({c: [getattr(r, c) for r in listing.rows] for c in LISTING_COLUMNS})
    pq.write_table(table, path)


def read_listing(path: Path) -> list[ListedObject]:
    """The rows of a listing written by ``write_listing``."""
    import pyarrow.parquet as pq

    return [ListedObject(**{c: str(rec[c]) for c in LISTING_COLUMNS}) for rec in pq.read_table(path).to_pylist()]


def load_listed_object(row: ListedObject, seed: int = 0, up_axis: str = "y") -> ColoredMesh:
    """The mesh of one listed object (MeshError or another exception names what is wrong with it).

    ``seed`` is the procedural world's; ``up_axis`` applies to OBJ / PLY files. An ``s3://`` object is
    downloaded to a temporary folder first, so it must be self-contained (.glb, .ply, or .obj without MTL)."""
    if row.location.startswith(PROCEDURAL_PREFIX):
        from vfusion3d_core.objects.procedural import ProceduralObjectGenerator

        mesh = ProceduralObjectGenerator(seed).build(int(row.location[len(PROCEDURAL_PREFIX):]))
        mesh.meta.setdefault("source", "procedural")
        return mesh
    if row.location.startswith("s3://"):
        from vfusion3d_core.data.s3_store import client_for, split_url

        bucket, key = split_url(row.location)
        with tempfile.TemporaryDirectory(prefix="vfusion3d-object-") as tmp:
            local = Path(tmp) / key.rsplit("/", 1)[-1]
            client_for(bucket).download_file(bucket, key, str(local))
            mesh = load_mesh_file(local, row.uid, row.caption, up_axis=up_axis)
    else:
        mesh = load_mesh_file(Path(row.location), row.uid, row.caption, up_axis=up_axis)
    mesh.meta.update(source="file", file=row.location)
    return mesh


def load_mesh_folder(folder: str | Path, captions_csv: str | Path | None = None,
                     caption_issues: CaptionIssues | None = None, *, up_axis: str = "y"
                     ) -> tuple[list[ColoredMesh], list[SkippedFile]]:
    """Load every mesh under ``folder`` (file order). Bad files are reported in the second list and skipped.

    The folder is listed as a ``source: folder`` listing lists it (same uids, same caption matching) and each file
    is loaded by ``load_listed_object``. ``up_axis`` ("y" or "z") is the up axis of the OBJ and PLY files (glTF is
    Y-up by specification).

    Captions come from ``captions_csv`` (or ``captions.csv`` in the folder when present); a mesh
    without a caption gets its file name as caption. Caption rows that are not used as given (uids matching
    no mesh file, empty captions, malformed or repeated rows) are listed by line, with their count, in one
    ``CaptionWarning``; pass ``caption_issues`` to receive them (and their ``count``) as data too.
    """
    from vfusion3d_core.objects.mesh import MeshError
    from vfusion3d_core.objects.mesh_file import UP_AXES

    if up_axis not in UP_AXES:  # checked once here: inside the loop it would become every file's skip reason
        raise ValueError(f"up_axis must be one of {UP_AXES}, got {up_axis!r}")
    issues = CaptionIssues() if caption_issues is None else caption_issues
    files, skipped = _folder_files(Path(folder), captions_csv, issues, stacklevel=3)
    meshes: list[ColoredMesh] = []
    for path, uid, caption in files:
        try:
            meshes.append(load_listed_object(ListedObject(uid, str(path), caption, "train", ""), up_axis=up_axis))
        except MeshError as exc:
            skipped.append(SkippedFile(str(path), str(exc)))
        except Exception as exc:  # one file's unexpected failure never ends the folder (bad-item policy)
            skipped.append(SkippedFile(str(path), f"cannot convert mesh: {type(exc).__name__}: {exc}"))
    return meshes, skipped
