"""Hostile and broken inputs, one case per kind, each fed to the code that consumes it.

Every case runs in a fresh workspace whose artifact root already holds committed versions (renders-like shards,
a prompt set, an LRM checkpoint). A case either expects a refusal (the right error type, a message naming the
culprit) or, for valid-but-hostile input (control characters, path-/shell-like prompt text, odd image modes),
safe processing. ``run_case`` then checks that nothing already written changed (every file of the root, byte
for byte; for accepted inputs all but LATEST.json pointers), that the folder outside the workspace is untouched
and that no file appeared at the "evil" absolute path the hostile inputs aim at.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import struct
import tarfile
import uuid
import zlib
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from pipeline_utils import hash_embed, materialize_prompt_set
from workloads import make_sample, write_shards

EVIL = "/tmp/vfusion3d-evil"  # + token: hostile inputs aim here; run_case asserts nothing appears


# --- workspace ----------------------------------------------------------------------------------------------
@dataclass
class Workspace:
    base: Path
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    frozen: dict[str, str] = field(default_factory=dict)
    frozen_prompt_files: set[str] = field(default_factory=set)

    @property
    def root(self) -> Path:  # artifact root with previously committed versions
        return self.base / "artifacts"

    @property
    def inputs(self) -> Path:  # where the bad inputs are made
        return self.base / "inputs"

    @property
    def outside(self) -> Path:  # a folder no input may reach into
        return self.base / "outside"

    @property
    def evil(self) -> Path:
        return Path(f"{EVIL}-{self.token}")

    @property
    def marker(self) -> Path:  # created only if a malicious pickle ran
        return self.base / f"pwned-{self.token}"

    def freeze(self) -> None:
        """Snapshot the previously written state now (after a case planted its bad input in the store)."""
        self.frozen = snapshot(self.root)


def snapshot(directory: Path) -> dict[str, str]:
    out = {}
    for p in sorted(directory.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[p.relative_to(directory).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@cache
def _tiny_lrm_checkpoint_bytes() -> dict[str, bytes]:
    import torch

    from vfusion3d_core.lrm import LRM, get_preset

    torch.manual_seed(0)
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"vfusion3d-tiny-lrm-{os.getpid()}"
    LRM(get_preset("tiny")).save_pretrained(tmp)
    files = {p.name: p.read_bytes() for p in tmp.iterdir()}
    shutil.rmtree(tmp, ignore_errors=True)
    return files


def build_workspace(base: Path) -> Workspace:
    """A fresh workspace: committed renders-like shards, a prompt set and an LRM checkpoint under ``root``."""
    from vfusion3d_core.data import ArtifactStore, Manifest, file_entries

    ws = Workspace(base)
    for d in (ws.root, ws.inputs, ws.outside):
        d.mkdir(parents=True)
    (ws.outside / "secret.txt").write_text("outside the source folder\n")
    (ws.outside / "stolen.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 2 3\nf 1 2 4\nf 1 3 4\nf 2 3 4\n")
    store = ArtifactStore(ws.root)
    with store.staging("renders_3d") as d:
        shards = write_shards(d / "train", 2, 2, seed=5)
        files = [p.relative_to(d).as_posix() for p in shards]
        store.commit(d, Manifest("renders_3d", file_entries(d, files), {"objects": 2}, {"seed": 5}), "renders_3d")
    for rel, data in _prompt_set_files().items():  # the prompt_set asset's own output
        (ws.root / "prompt_set" / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws.root / "prompt_set" / rel).write_bytes(data)
    with store.staging("lrm_pretrained") as d:
        (d / "model").mkdir()
        for name, data in _tiny_lrm_checkpoint_bytes().items():
            (d / "model" / name).write_bytes(data)
        files = [f"model/{n}" for n in sorted(_tiny_lrm_checkpoint_bytes())]
        store.commit(d, Manifest("lrm_pretrained", file_entries(d, files), {}, {}), "lrm_pretrained")
    return ws


def lrm_checkpoint(ws: Workspace) -> Path:
    from vfusion3d_core.data import ArtifactStore

    return ArtifactStore(ws.root).latest("lrm_pretrained").path / "model"


@contextmanager
def expect(exc_type: type[BaseException] | tuple[type[BaseException], ...], *needles: str):
    """The block must raise ``exc_type`` whose message contains every needle (the culprit's name, the reason)."""
    try:
        yield
    except exc_type as exc:
        message = str(exc)
        missing = [n for n in needles if n not in message]
        assert not missing, f"{type(exc).__name__} message {message!r} does not mention {missing}"
        return
    raise AssertionError(f"no {exc_type} raised")


# --- consumers (the code paths assets run) ------------------------------------------------------------------
def publish_shards(ws: Workspace, shards: list[Path]) -> None:
    """Read samples the way filtering / training do and publish them as a new version (commit only on success)."""
    from vfusion3d_core.data import ArtifactStore, Manifest, ShardWriter, file_entries, iter_samples

    store = ArtifactStore(ws.root)
    with store.staging("republished") as d:
        with ShardWriter(d, 4) as writer:
            for sample in iter_samples(shards):
                writer.write(sample)
        files = [p.name for p in writer.shards]
        store.commit(d, Manifest("republished", file_entries(d, files), {"shards": len(files)}, {}), "republished")


class PromptSetRefused(Exception):
    """The prompt_set asset failed; the message is its step failure's."""


def _prompt_set_resources(root: Path, mlflow_root: Path) -> dict:
    from vfusion3d_pipeline.resources import ArtifactStoreResource, MLflowResource

    return {"artifacts": ArtifactStoreResource(root=str(root)),
            "mlflow": MLflowResource(artifact_root=str(mlflow_root))}


@cache
def _prompt_set_files() -> dict[str, bytes]:
    """The files of the prompt_set asset materialized once (6 template prompts, shards of 4), by path under its
    asset directory; every workspace starts from a copy."""
    import dagster as dg

    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"vfusion3d-prompt-set-{os.getpid()}"
    try:
        materialize_prompt_set(_prompt_set_resources(tmp / "artifacts", tmp / "mlflow"),
                               dg.DagsterInstance.ephemeral(), {"template_count": 6, "shard_size": 4}, hash_embed)
        asset = tmp / "artifacts" / "prompt_set"
        return {p.relative_to(asset).as_posix(): p.read_bytes() for p in sorted(asset.rglob("*")) if p.is_file()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish_prompts(ws: Workspace, source: Path, column: str = "prompt"):
    """The prompt_set asset (in-process) on ``source``: read + normalize + dedup, append shards, commit a version;
    returns the version, or raises PromptSetRefused with the asset's failure message."""
    import dagster as dg

    from vfusion3d_core.data import ArtifactStore

    result = materialize_prompt_set(_prompt_set_resources(ws.root, ws.base / "mlflow"),
                                    dg.DagsterInstance.ephemeral(),
                                    {"source_file": str(source), "source_column": column, "template_count": 0,
                                     "shard_size": 4}, hash_embed, raise_on_error=False)
    if not result.success:
        raise PromptSetRefused(result.get_step_failure_events()[0].event_specific_data.error.message)
    return ArtifactStore(ws.root).latest("prompt_set")


def generate_cli(ws: Workspace, *args: str):
    from click.testing import CliRunner

    from vfusion3d_core.cli import main

    return CliRunner().invoke(main, ["generate", *args])


def assert_cli_refuses(result, *needles: str) -> None:
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    missing = [n for n in needles if n not in result.output]
    assert not missing, f"output {result.output!r} does not mention {missing}"


# --- builders ----------------------------------------------------------------------------------------------
def good_shard(ws: Workspace, name: str = "good") -> Path:
    return write_shards(ws.inputs / name, 2, 4, seed=9 if name == "good" else 8)[0]


def raw_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w") as tf:
        for info, payload in members:
            if payload is not None:
                info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return path


def sample_tar(path: Path, key: str = "obj", **replace: bytes) -> Path:
    """A one-sample shard of a valid sample with some members replaced (suffix -> bytes; b"" drops it)."""
    members = make_sample(key, 3).to_wds()
    members.pop("__key__")
    for suffix, data in replace.items():
        suffix = suffix.replace("_", ".")
        if data == b"":
            members.pop(suffix, None)
        else:
            members[suffix] = data
    return raw_tar(path, [(tarfile.TarInfo(f"{key}.{s}"), d) for s, d in members.items()])


def npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=a.dtype == object)
    return buf.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A tiny PNG that claims ``width`` x ``height`` pixels (a decompression bomb for a naive decoder)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


class Evil:
    """Unpickling this runs ``open(marker, "w")``: proof of code execution if the marker appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def assert_not_pwned(ws: Workspace) -> None:
    assert not ws.marker.exists(), "a pickle payload was executed"


# --- cases -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    id: str
    fn: Callable[[Workspace], None]
    accepted: bool = False  # valid-but-hostile input: processed safely (may publish a new version)

    @property
    def kind(self) -> str:
        return self.id.split("-", 1)[0]


CASES: list[Case] = []


def case(case_id: str, accepted: bool = False):
    def register(fn: Callable[[Workspace], None]) -> Callable[[Workspace], None]:
        CASES.append(Case(case_id, fn, accepted))
        return fn

    return register


# meshes: a source folder with one good mesh and one bad entry; the bad one is skipped by name with its reason
def _mesh_folder(ws: Workspace, name: str, reason: str, make: Callable[[Path], None],
                 expect_skipped: bool = True) -> None:
    import trimesh

    from vfusion3d_core.objects.listing import load_mesh_folder

    src = ws.inputs / "meshes"
    src.mkdir()
    trimesh.creation.box().export(src / "good.obj")
    make(src)
    meshes, skipped = load_mesh_folder(src)
    assert [m.uid for m in meshes] == ["good"], [m.uid for m in meshes]
    reasons = {Path(s.path).name: s.reason for s in skipped}
    if expect_skipped:
        assert name in reasons and reason in reasons[name], reasons
    else:
        assert not skipped, reasons


def _ply_with_nan(p: Path) -> None:
    header = (b"ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
              b"property float z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n")
    verts = np.array([[np.nan, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32).tobytes()
    p.write_bytes(header + verts + bytes([3]) + np.array([0, 1, 2], np.int32).tobytes())


MESHES = {
    "mesh-corrupt-glb": ("broken.glb", "unreadable",
                         lambda s: (s / "broken.glb").write_bytes(b"glTF\x02\x00\x00\x00" + bytes(range(256)))),
    "mesh-empty-file": ("empty.obj", "empty", lambda s: (s / "empty.obj").write_bytes(b"")),
    "mesh-nan-vertices": ("nan.ply", "non-finite", lambda s: _ply_with_nan(s / "nan.ply")),
    "mesh-degenerate-point": ("point.obj", "degenerate",
                              lambda s: (s / "point.obj").write_text("v 1 1 1\nv 1 1 1\nv 1 1 1\nf 1 2 3\n")),
    "mesh-degenerate-zero-area": ("line.obj", "degenerate",
                                  lambda s: (s / "line.obj").write_text("v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n")),
    "mesh-bad-face-index": ("idx.obj", "unreadable",
                            lambda s: (s / "idx.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n")),
    "mesh-no-faces": ("cloud.obj", "no triangles", lambda s: (s / "cloud.obj").write_text("v 0 0 0\nv 1 0 0\n")),
    "mesh-oversized-file": ("huge.obj", "too large", lambda s: os.truncate(_touch(s / "huge.obj"), 600 << 20)),
    "mesh-truncated-ply": ("cut.ply", "unreadable", lambda s: (s / "cut.ply").write_bytes(
        b"ply\nformat binary_little_endian 1.0\nelement vertex 1000\nproperty float x\nproperty float y\n"
        b"property float z\nend_header\n" + b"\0" * 10)),
}


def _touch(p: Path) -> Path:
    p.touch()
    return p


for _id, (_name, _reason, _make) in MESHES.items():
    case(_id)(lambda ws, n=_name, r=_reason, m=_make: _mesh_folder(ws, n, r, m))


@case("mesh-symlink-outside")
def _(ws: Workspace) -> None:
    _mesh_folder(ws, "link.obj", "outside", lambda s: os.symlink(ws.outside / "stolen.obj", s / "link.obj"))


@case("mesh-symlink-to-device")
def _(ws: Workspace) -> None:
    _mesh_folder(ws, "zero.obj", "outside", lambda s: os.symlink("/dev/zero", s / "zero.obj"))


@case("mesh-symlinked-dir-outside")
def _(ws: Workspace) -> None:  # outside/stolen.obj must not be found through the link
    _mesh_folder(ws, "", "", lambda s: os.symlink(ws.outside, s / "linked_dir"), expect_skipped=False)


@case("mesh-symlink-loop")
def _(ws: Workspace) -> None:
    _mesh_folder(ws, "loop.obj", "looping", lambda s: os.symlink(s / "loop.obj", s / "loop.obj"))


@case("mesh-dangling-symlink")
def _(ws: Workspace) -> None:
    _mesh_folder(ws, "dangling.obj", "broken", lambda s: os.symlink(s / "missing.obj", s / "dangling.obj"))


# prompt source files: the prompt_set asset fails with the PromptSourceError naming the file, before anything is
# written
def _prompt_refused(ws: Workspace, name: str, data: bytes | Callable[[Path], None], reason: str,
                    column: str = "prompt") -> None:
    path = ws.inputs / name
    path.write_bytes(data) if isinstance(data, bytes) else data(path)
    with expect(PromptSetRefused, "bad prompt source", str(path), reason):
        publish_prompts(ws, path, column)


PROMPT_FILES = {
    "prompt-binary-file": ("bin.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00binary", "binary"),
    "prompt-utf16-file": ("utf16.txt", "a red cube\n".encode("utf-16"), "binary"),
    "prompt-mis-encoded": ("latin1.txt", "caf\xe9 au lait cube\n".encode("latin-1"), "UTF-8"),
    "prompt-empty-file": ("empty.txt", b"", "no prompts"),
    "prompt-blank-lines": ("blank.txt", b"\n  \n\t\n", "no prompts"),
    "prompt-csv-missing-column": ("p.csv", b"text,caption\na,a red cube\n", "no column 'prompt'"),
    "prompt-csv-malformed": ("bad.csv", b'prompt\n"unterminated,quote\nnext\n', "CSV"),
    "prompt-fake-parquet": ("fake.parquet", b"prompt\nnot parquet at all\n", "parquet"),
    "prompt-parquet-non-text": ("nums.parquet", lambda p: pd.DataFrame({"prompt": [1, 2]}).to_parquet(p), "non-text"),
    "prompt-unsupported-type": ("p.json", b'["a red cube"]', "unsupported"),
}
for _id, (_name, _data, _reason) in PROMPT_FILES.items():
    case(_id)(lambda ws, n=_name, d=_data, r=_reason: _prompt_refused(ws, n, d, r))


def _prompts_accepted(ws: Workspace, lines: list[str], forbidden: list[str]) -> list[str]:
    """Hostile prompt text is stored as normalized text only: ids stay hex, no control characters survive, no
    file appears but the shards, nothing is executed."""
    from vfusion3d_core.prompts.shards import read_prompt_shard

    src = ws.inputs / "hostile.txt"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    version = publish_prompts(ws, src)
    new = [f.path for f in version.manifest.files if f.path not in ws.frozen_prompt_files]
    assert new, "no new shard was written"
    assert all(p.startswith("shards/shard-") and p.endswith(".parquet") for p in new), new
    on_disk = sorted(p.relative_to(version.path).as_posix() for p in version.path.rglob("*") if p.is_file())
    assert on_disk == sorted([f.path for f in version.manifest.files] + ["manifest.json"]), on_disk
    stored = [r for p in new for r in read_prompt_shard(version.path / p)]
    for r in stored:
        assert re.fullmatch(r"p[0-9a-f]{16}", r.prompt_id), r.prompt_id
        assert not any(c in r.prompt for c in forbidden), repr(r.prompt)
    return [r.prompt for r in stored]


def _frozen_prompt_files(ws: Workspace) -> None:
    from vfusion3d_core.data import ArtifactStore

    ws.frozen_prompt_files = {f.path for f in ArtifactStore(ws.root).latest("prompt_set").manifest.files}


@case("prompt-control-characters", accepted=True)
def _(ws: Workspace) -> None:
    _frozen_prompt_files(ws)
    prompts = _prompts_accepted(ws, ["a red cube\x1b[2J\x07 on a\ttable", "a blue\x08\x7f ball\r"],
                                ["\x1b", "\x07", "\x08", "\x7f", "\r", "\t"])
    assert "a red cube [2J on a table" in prompts and "a blue ball" in prompts, prompts


@case("prompt-bidi-overrides", accepted=True)
def _(ws: Workspace) -> None:
    _frozen_prompt_files(ws)
    prompts = _prompts_accepted(ws, ["a \u202egreen\u202c torus", "\u2066a pink\u2069 cone\u200b\ufeff"],
                                ["\u202e", "\u202c", "\u2066", "\u2069", "\u200b", "\ufeff"])
    assert "a green torus" in prompts and "a pink cone" in prompts, prompts


@case("prompt-path-and-shell-text", accepted=True)
def _(ws: Workspace) -> None:
    _frozen_prompt_files(ws)
    evil = str(ws.evil)
    hostile = [f"../../../..{evil}", f"a cube; touch {evil}", f"$(touch {evil}) `touch {evil}` | tee {evil}",
               f"{evil}\\..\\..\\x", "~/.ssh/id_rsa && rm -rf ~"]
    prompts = _prompts_accepted(ws, hostile, [])
    assert set(prompts) == set(hostile), prompts  # kept verbatim, as text


# labels CSVs: refused with LabelsError naming the file and line
def _labels_refused(ws: Workspace, text: str, *needles: str, encoding: str = "utf-8") -> None:
    from vfusion3d_core.filtering.models import LabelsError, read_labels_csv

    path = ws.inputs / "labels.csv"
    path.write_bytes(text.encode(encoding))
    with expect(LabelsError, str(path), *needles):
        read_labels_csv(path)


LABELS = {
    "labels-missing-column": ("key,verdict\npa,good\n", "video_key,label"),
    "labels-unknown-label": ("video_key,label\npa,good\npb,maybe\n", ":3", "maybe"),
    "labels-path-like-key": ("video_key,label\n../../etc/passwd,good\n", ":2", "../../etc/passwd"),
    "labels-shell-like-key": ("video_key,label\n$(touch /tmp/x),bad\n", ":2", "$(touch /tmp/x)"),
    "labels-control-char-key": ("video_key,label\np\x1b[2Jx,bad\n", ":2", "not a sample key"),
    "labels-conflicting-partitions": ("video_key,label,partition\npa,good,shard-000000\npa,bad,shard-000001\n",
                                      ":3", "pa", "shard-000000", "shard-000001"),
    "labels-empty-key": ("video_key,label\n,good\n", ":2"),
}
for _id, (_text, *_needles) in LABELS.items():
    case(_id)(lambda ws, t=_text, n=tuple(_needles): _labels_refused(ws, t, *n))


@case("labels-mis-encoded")
def _(ws: Workspace) -> None:
    _labels_refused(ws, "video_key,label\npcafé,good\n", "UTF-8", encoding="latin-1")


@case("labels-relabelled-key", accepted=True)
def _(ws: Workspace) -> None:
    """The same key labelled good then bad (``vfusion3d label --relabel`` appends): the later row wins."""
    from vfusion3d_core.filtering.models import read_labels_csv

    path = ws.inputs / "labels.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([["video_key", "label", "partition"], ["pa", "good", "shard-000000"],
                                 ["pb", "bad", "shard-000000"], ["pa", "BAD", "shard-000000"]])
    assert read_labels_csv(path) == {"pa": 0, "pb": 0}


@case("labels-unknown-keys", accepted=True)
def _(ws: Workspace) -> None:
    """Keys of videos that do not exist are reported by name and not trained on."""
    from vfusion3d_core.filtering.models import match_labels

    known, unknown = match_labels({"pa": 1, "pzz": 0, "pb": 0, "pyy": 1}, ["pa", "pb", "pc"])
    assert known == {"pa": 1, "pb": 0} and unknown == ["pyy", "pzz"]


# tar shards: a batch input (docs/reliability.md, "Bad items in batch inputs"): the bad shard or sample is skipped
# with a warning naming it and its reason, nothing of it is extracted or unpickled; next to a 2-sample good shard it
# is over the allowed share (1 %), so the run fails with TooManyBadItems naming the shard and the reason and
# nothing is published. ``exc`` is the kind of bad item: a whole shard (ShardError) or a sample (SampleError).
def _shard_refused(ws: Workspace, shard: Path, exc: str, *needles: str) -> None:
    from vfusion3d_core.data import TooManyBadItems

    kinds = {"ShardError": "shards", "SampleError": "samples"}
    with expect(TooManyBadItems, str(shard), f"1 of {3 if exc == 'SampleError' else 2} {kinds[exc]}", *needles):
        publish_shards(ws, [good_shard(ws), shard])  # a good shard first: its samples must not be published


def _cut(ws: Workspace, where: Callable[[list[tarfile.TarInfo], int], int]) -> Path:
    src = good_shard(ws, "src")
    with tarfile.open(src) as tf:
        members = tf.getmembers()
    data = src.read_bytes()
    out = ws.inputs / "cut.tar"
    out.write_bytes(data[:where(members, len(data))])
    return out


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@case("shard-truncated-mid-member")
def _(ws: Workspace) -> None:
    _shard_refused(ws, _cut(ws, lambda m, n: m[5].offset_data + 50), "ShardError", "unexpected end")


@case("shard-truncated-at-member-boundary")
def _(ws: Workspace) -> None:
    # cut exactly where the second sample starts: a valid-looking shorter tar without its end marker
    _shard_refused(ws, _cut(ws, lambda m, n: next(x.offset for x in m if not x.name.startswith(m[0].name[:8]))),
                   "ShardError", "truncated")


@case("shard-truncated-header")
def _(ws: Workspace) -> None:
    _shard_refused(ws, _cut(ws, lambda m, n: 100), "ShardError", "unreadable")


@case("shard-garbage")
def _(ws: Workspace) -> None:
    p = ws.inputs / "garbage.tar"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    _shard_refused(ws, p, "ShardError", "unreadable")


@case("shard-empty-file")
def _(ws: Workspace) -> None:
    p = ws.inputs / "empty.tar"
    p.write_bytes(b"")
    _shard_refused(ws, p, "ShardError", "empty")


@case("shard-gzip-not-tar")
def _(ws: Workspace) -> None:
    p = ws.inputs / "gz.tar"
    with tarfile.open(p, "w:gz") as tf:
        tf.add(good_shard(ws, "src"), arcname="x.000.png")
    _shard_refused(ws, p, "ShardError", "unreadable")


@case("shard-absolute-member")
def _(ws: Workspace) -> None:
    p = raw_tar(ws.inputs / "abs.tar", [(_member(f"{ws.evil}.000.png"), b"x")])
    _shard_refused(ws, p, "ShardError", "unsafe member path", str(ws.evil))


@case("shard-dotdot-member")
def _(ws: Workspace) -> None:
    p = raw_tar(ws.inputs / "dotdot.tar", [(_member(f"a/../../../../..{ws.evil}.000.png"), b"x")])
    _shard_refused(ws, p, "ShardError", "unsafe member path")


@case("shard-symlink-member")
def _(ws: Workspace) -> None:
    p = raw_tar(ws.inputs / "sym.tar", [(_member("obj.000.png", tarfile.SYMTYPE, str(ws.outside / "secret.txt")),
                                         None)])
    _shard_refused(ws, p, "ShardError", "not a regular file", "obj.000.png")


@case("shard-hardlink-member")
def _(ws: Workspace) -> None:
    p = raw_tar(ws.inputs / "hard.tar", [(_member("obj.000.png", tarfile.LNKTYPE, "../../outside/secret.txt"), None)])
    _shard_refused(ws, p, "ShardError", "not a regular file")


@case("shard-device-member")
def _(ws: Workspace) -> None:
    p = raw_tar(ws.inputs / "dev.tar", [(_member("obj.000.png", tarfile.CHRTYPE), None)])
    _shard_refused(ws, p, "ShardError", "not a regular file")


@case("shard-incomplete-sample")
def _(ws: Workspace) -> None:
    _shard_refused(ws, sample_tar(ws.inputs / "inc.tar", c2w_npy=b""), "SampleError", "obj", "incomplete")


@case("shard-bad-sample-key")
def _(ws: Workspace) -> None:
    members = {k: v for k, v in make_sample("x", 1).to_wds().items() if k != "__key__"}
    p = raw_tar(ws.inputs / "key.tar", [(_member(f"ob\x1bj.{suffix}"), data) for suffix, data in members.items()])
    _shard_refused(ws, p, "SampleError", "sample key")


@case("shard-cameras-wrong-shape")
def _(ws: Workspace) -> None:
    p = sample_tar(ws.inputs / "shape.tar", c2w_npy=npy(np.zeros((4, 3, 4), np.float32)))
    _shard_refused(ws, p, "SampleError", "obj", "do not match")


@case("shard-cameras-nan")
def _(ws: Workspace) -> None:
    c2w = make_sample("obj", 3).c2w.copy()
    c2w[1, 0, 3] = np.nan
    _shard_refused(ws, sample_tar(ws.inputs / "nan.tar", c2w_npy=npy(c2w)), "SampleError", "obj", "non-finite")


@case("shard-intrinsics-inf")
def _(ws: Workspace) -> None:
    intr = make_sample("obj", 3).intrinsics.copy()
    intr[0, 0] = np.inf
    p = sample_tar(ws.inputs / "inf.tar", intrinsics_npy=npy(intr))
    _shard_refused(ws, p, "SampleError", "obj", "non-finite")


@case("shard-cameras-not-rigid")
def _(ws: Workspace) -> None:
    c2w = make_sample("obj", 3).c2w.copy()
    c2w[2, :3, :3] *= 3.0  # a scaled "rotation": rays would be meaningless
    p = sample_tar(ws.inputs / "scaled.tar", c2w_npy=npy(c2w))
    _shard_refused(ws, p, "SampleError", "obj", "camera 2 is not a rigid")


@case("shard-zero-focal-length")
def _(ws: Workspace) -> None:
    intr = make_sample("obj", 3).intrinsics.copy()
    intr[:, 0] = 0.0
    p = sample_tar(ws.inputs / "focal.tar", intrinsics_npy=npy(intr))
    _shard_refused(ws, p, "SampleError", "obj", "focal")


@case("shard-pickled-npy")
def _(ws: Workspace) -> None:
    obj = np.empty(1, dtype=object)
    obj[0] = Evil(ws.marker)
    p = sample_tar(ws.inputs / "pickle.tar", c2w_npy=npy(obj))
    _shard_refused(ws, p, "SampleError", "obj", "pickle")
    assert_not_pwned(ws)


@case("shard-png-bomb-view")
def _(ws: Workspace) -> None:
    p = sample_tar(ws.inputs / "bomb.tar", **{"001_png": png_header(100_000, 100_000)})
    _shard_refused(ws, p, "SampleError", "obj", "exceeds")


@case("shard-bad-meta-json")
def _(ws: Workspace) -> None:
    _shard_refused(ws, sample_tar(ws.inputs / "meta.tar", meta_json=b"{not json"), "SampleError", "obj", "decode")


@case("shard-caption-not-utf8")
def _(ws: Workspace) -> None:
    p = sample_tar(ws.inputs / "cap.tar", caption_txt="caf\xe9".encode("latin-1"))
    _shard_refused(ws, p, "SampleError", "obj", "decode")


# checkpoints and weight files
def _copy_checkpoint(ws: Workspace) -> Path:
    dst = ws.inputs / "ckpt"
    shutil.copytree(lrm_checkpoint(ws), dst)
    return dst


def _image(ws: Workspace) -> Path:
    p = ws.inputs / "input.png"
    rgba = np.zeros((48, 48, 4), np.uint8)
    rgba[12:36, 12:36] = (200, 40, 40, 255)
    Image.fromarray(rgba).save(p)
    return p


def _safetensors_refused(ws: Workspace, corrupt: Callable[[bytes], bytes]) -> None:
    from vfusion3d_core.lrm import LRM, CheckpointMismatchError

    ckpt = _copy_checkpoint(ws)
    weights = ckpt / "model.safetensors"
    weights.write_bytes(corrupt(weights.read_bytes()))
    with expect(CheckpointMismatchError, str(weights)):
        LRM.from_pretrained(ckpt)
    result = generate_cli(ws, str(_image(ws)), "--checkpoint", str(ckpt), "-o", str(ws.inputs / "out"))
    assert_cli_refuses(result, "cannot load the model", "model.safetensors")
    assert not (ws.inputs / "out").exists()


def _lying_header(data: bytes) -> bytes:
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    name = next(k for k in header if k != "__metadata__")
    header[name]["data_offsets"] = [0, len(data) * 4]  # claims more bytes than the file has
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data[8 + n:]


@case("ckpt-truncated-safetensors")
def _(ws: Workspace) -> None:
    _safetensors_refused(ws, lambda d: d[: len(d) // 2])


@case("ckpt-lying-safetensors-header")
def _(ws: Workspace) -> None:
    _safetensors_refused(ws, _lying_header)


@case("ckpt-huge-safetensors-header")
def _(ws: Workspace) -> None:
    _safetensors_refused(ws, lambda d: struct.pack("<Q", 1 << 60) + d[8:])


def _training_dir(ws: Workspace, corrupt_weights: Callable[[dict], None] | None = None,
                  state: object | None = None) -> tuple[Path, list[str]]:
    """A training output folder holding one checkpoint made from the committed tiny LRM."""
    import torch
    from safetensors.torch import load_file, save_file

    out = ws.inputs / "train"
    ckpt = out / "checkpoints" / "step-00000001"
    shutil.copytree(lrm_checkpoint(ws), ckpt)
    weights = load_file(ckpt / "model.safetensors")
    if corrupt_weights:
        corrupt_weights(weights)
        save_file(weights, ckpt / "model.safetensors")
    torch.save(state if state is not None else {"world_size": 1, "step": 1}, ckpt / "training_state.pt")
    shards = [str(p) for p in write_shards(ws.inputs / "data", 2, 2, seed=3)]
    return out, shards


def _trainer(out: Path, shards: list[str], model=None):
    from workloads import train_config

    from vfusion3d_core.lrm.train import LRMTrainer

    return LRMTrainer(train_config(steps=2), shards, out, model=model)


def _poison(weights: dict) -> None:
    import torch

    name = sorted(weights)[len(weights) // 2]
    weights[name] = torch.full_like(weights[name], float("nan"))


@case("ckpt-nan-weights-resume")
def _(ws: Workspace) -> None:
    from vfusion3d_core.lrm.train.checkpoint import CheckpointError

    out, shards = _training_dir(ws, corrupt_weights=_poison)
    before = snapshot(out)
    with expect(CheckpointError, "step-00000001", "non-finite"):
        _trainer(out, shards).train()
    assert snapshot(out) == before  # no step taken, no checkpoint written


@case("ckpt-inf-init-weights")
def _(ws: Workspace) -> None:
    """Fine-tuning initialised from a checkpoint with inf weights is refused: loading the checkpoint already
    refuses it (naming the file and the tensor); a model holding inf in memory is refused by the
    trainer before the first step."""
    import torch
    from safetensors.torch import load_file, save_file

    from vfusion3d_core.lrm import LRM, CheckpointMismatchError
    from vfusion3d_core.lrm.train.checkpoint import CheckpointError

    ckpt = _copy_checkpoint(ws)
    model = LRM.from_pretrained(ckpt)
    weights = load_file(ckpt / "model.safetensors")
    name = sorted(weights)[0]
    weights[name].fill_(float("inf"))
    save_file(weights, ckpt / "model.safetensors")
    with expect(CheckpointMismatchError, str(ckpt / "model.safetensors"), name, "non-finite"):
        LRM.from_pretrained(ckpt)
    with torch.no_grad():
        model.state_dict()[name].fill_(float("inf"))
    out = ws.inputs / "finetune"
    with expect(CheckpointError, "non-finite", "refusing to train"):
        _trainer(out, [str(good_shard(ws))], model=model)
    assert not (out / "checkpoints").exists() or not any((out / "checkpoints").iterdir())


@case("ckpt-nan-weights-generate")
def _(ws: Workspace) -> None:
    """`vfusion3d generate` with a checkpoint whose weights hold NaN (and inf): refused, naming the file,
    before any output is written."""
    import torch
    from safetensors.torch import load_file, save_file

    ckpt = _copy_checkpoint(ws)
    weights = load_file(ckpt / "model.safetensors")
    _poison(weights)
    name = sorted(weights)[0]
    weights[name] = torch.full_like(weights[name], float("-inf"))
    save_file(weights, ckpt / "model.safetensors")
    result = generate_cli(ws, str(_image(ws)), "--checkpoint", str(ckpt), "-o", str(ws.inputs / "out"))
    assert_cli_refuses(result, "cannot load the model", str(ckpt / "model.safetensors"), "non-finite")
    assert not (ws.inputs / "out").exists()


@case("ckpt-pickle-training-state")
def _(ws: Workspace) -> None:
    from vfusion3d_core.lrm.train.checkpoint import CheckpointError

    out, shards = _training_dir(ws, state={"world_size": 1, "step": 1, "payload": Evil(ws.marker)})
    with expect(CheckpointError, "training_state.pt"):
        _trainer(out, shards)
    assert_not_pwned(ws)


@case("ckpt-truncated-training-state")
def _(ws: Workspace) -> None:
    from vfusion3d_core.lrm.train.checkpoint import CheckpointError

    out, shards = _training_dir(ws)
    state = out / "checkpoints" / "step-00000001" / "training_state.pt"
    state.write_bytes(state.read_bytes()[:40])
    with expect(CheckpointError, "training_state.pt"):
        _trainer(out, shards)


@case("ckpt-pickle-official-weights")
def _(ws: Workspace) -> None:
    import torch

    from vfusion3d_core.lrm import CheckpointMismatchError
    from vfusion3d_core.lrm.checkpoint import read_weight_file

    evil = ws.inputs / "vfusion3d_released.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hook": Evil(ws.marker)}, evil)
    with expect(CheckpointMismatchError, str(evil)):
        read_weight_file(evil)
    result = generate_cli(ws, str(_image(ws)), "--official", str(evil), "-o", str(ws.inputs / "out"))
    assert_cli_refuses(result, "cannot load the model", str(evil))
    assert_not_pwned(ws)


@case("ckpt-pickle-video-optimizer")
def _(ws: Workspace) -> None:
    import torch

    from vfusion3d_core.video.checkpoint import CheckpointError, TrainState, load_train_state, save_train_state

    state = TrainState(3, {"unet.w": torch.ones(2)}, {"state": {}, "param_groups": []}, {"last_epoch": 3},
                       torch.Generator().get_state())
    path = save_train_state(ws.inputs / "video_ckpt", state)
    assert load_train_state(path).step == 3  # the genuine checkpoint loads (weights_only)
    torch.save({"state": {}, "param_groups": [], "x": Evil(ws.marker)}, path / "optimizer.pt")
    with expect(CheckpointError, "optimizer.pt", "weights_only"):
        load_train_state(path)
    assert_not_pwned(ws)


@case("ckpt-tampered-quality-joblib")
def _(ws: Workspace) -> None:
    """quality_models' joblib files are pickles: they are loaded only after their manifest hashes verify."""
    import joblib

    from vfusion3d_core.data import ArtifactStore, Manifest, ManifestError, file_entries
    from vfusion3d_pipeline.assets.filtering import load_quality_models

    store = ArtifactStore(ws.root)
    with store.staging("quality_models") as d:
        (d / "models").mkdir()
        joblib.dump({"svm": "placeholder"}, d / "models" / "quality_svm.joblib")
        store.commit(d, Manifest("quality_models", file_entries(d, ["models/quality_svm.joblib"]), {}, {}),
                     "quality_models")
    target = store.latest("quality_models").path / "models" / "quality_svm.joblib"
    joblib.dump(Evil(ws.marker), target)  # the attack: swap the pickle inside a committed version
    ws.freeze()
    with expect(ManifestError, "quality_svm.joblib"):
        load_quality_models(store)
    assert_not_pwned(ws)


# images given to `vfusion3d generate`: refused before the model is loaded, naming the file
def _image_refused(ws: Workspace, name: str, make: Callable[[Path], None], *needles: str,
                   extra: tuple[str, ...] = ()) -> None:
    path = ws.inputs / name
    make(path)
    result = generate_cli(ws, str(path), "--checkpoint", str(lrm_checkpoint(ws)), "-o", str(ws.inputs / "out"),
                          *extra)
    assert_cli_refuses(result, str(path), *needles)
    assert not (ws.inputs / "out").exists() or not any((ws.inputs / "out").rglob("*.glb"))


IMAGES = {
    "image-not-an-image": ("photo.png", lambda p: p.write_text("hello"), ("cannot read image",), ()),
    "image-empty-file": ("empty.png", lambda p: p.write_bytes(b""), ("cannot read image",), ()),
    "image-truncated-png": ("cut.png", lambda p: p.write_bytes(png_header(64, 64)[:-20]), ("cannot read image",), ()),
    "image-decompression-bomb": ("bomb.png", lambda p: p.write_bytes(png_header(100_000, 100_000)),
                                 ("cannot read image",), ()),
    "image-over-pixel-limit": ("big.png", lambda p: p.write_bytes(png_header(9000, 9000)),
                               ("decompression-bomb guard",), ()),
    "image-over-user-limit": ("small.png", lambda p: Image.new("RGB", (64, 64)).save(p), ("exceeds the limit",),
                              ("--max-pixels", "1000")),
    "image-is-a-directory": ("folder.png", lambda p: p.mkdir(), ("no such file",), ()),
    "image-fully-transparent": ("clear.png", lambda p: Image.new("RGBA", (32, 32), (0, 0, 0, 0)).save(p),
                                ("fully transparent",), ("--views", "1", "--mesh-resolution", "8")),
}
for _id, (_name, _make, _needles, _extra) in IMAGES.items():
    case(_id)(lambda ws, n=_name, m=_make, nd=_needles, e=_extra: _image_refused(ws, n, m, *nd, extra=e))


ODD_IMAGES = {
    "16bit.png": lambda p: Image.fromarray((np.arange(400).reshape(20, 20) * 150).astype(np.uint16)).save(p),
    "cmyk.jpg": lambda p: Image.new("CMYK", (20, 20), (10, 200, 30, 0)).save(p),
    "float.tiff": lambda p: Image.fromarray(np.linspace(0, 1, 400, dtype=np.float32).reshape(20, 20)).save(p),
    "one_pixel.png": lambda p: Image.new("RGB", (1, 1), (255, 0, 0)).save(p),
    "animated.gif": lambda p: Image.new("RGB", (20, 20), (255, 0, 0)).save(
        p, save_all=True, append_images=[Image.new("RGB", (20, 20), (0, 255, 0))]),
    "palette_alpha.png": lambda p: _palette_with_transparency(p),
    "thin.png": lambda p: Image.new("RGB", (4000, 2), (0, 0, 255)).save(p),
}


def _palette_with_transparency(p: Path) -> None:
    img = Image.new("P", (20, 20), 0)
    img.putpalette([255, 255, 255, 200, 0, 0] + [0] * 762)
    img.paste(1, (5, 5, 15, 15))
    img.save(p, transparency=0)


@case("image-odd-modes", accepted=True)
def _(ws: Workspace) -> None:
    """Unusual but valid images (16-bit, CMYK, float, 1 pixel, animated, palette + alpha, 2000:1) are normalized
    to an RGB input in [0, 1]; one goes through `vfusion3d generate` end to end."""
    import torch

    from vfusion3d_core.lrm.preprocess import prepare_image

    for name, make in ODD_IMAGES.items():
        path = ws.inputs / name
        make(path)
        prepared = prepare_image(path, 32, background="never")
        assert prepared.image.shape == (3, 32, 32) and torch.isfinite(prepared.image).all(), name
        assert float(prepared.image.min()) >= 0.0 and float(prepared.image.max()) <= 1.0, name
    out = ws.inputs / "out"
    result = generate_cli(ws, str(ws.inputs / "16bit.png"), "--checkpoint", str(lrm_checkpoint(ws)), "-o", str(out),
                          "--views", "2", "--render-size", "16", "--mesh-resolution", "16", "--mesh-format", "obj",
                          "--video-format", "gif", "--remove-background", "never")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.rglob("*") if p.is_file())[:1], result.output


# batch inputs (docs/reliability.md, "Bad items in batch inputs"): batches of images, configs, meshes far from
# the unit box, captions that match nothing
@case("image-bad-among-good")
def _(ws: Workspace) -> None:
    """`generate BAD good`: BAD is reported by name with its reason, good is processed, the exit status is 1
    with a summary line, and BAD leaves no output folder."""
    bad = ws.inputs / "BAD.png"
    bad.write_text("hello")
    out = ws.inputs / "out"
    result = generate_cli(ws, str(bad), str(_image(ws)), "--checkpoint", str(lrm_checkpoint(ws)), "-o", str(out),
                          "--views", "1", "--render-size", "16", "--mesh-resolution", "8", "--mesh-format", "obj",
                          "--video-format", "gif", "--remove-background", "never")
    assert_cli_refuses(result, str(bad), "cannot read image", "1 of 2 image(s) processed")
    assert sorted(p.name for p in out.iterdir()) == ["input"], sorted(out.iterdir())
    assert (out / "input" / "input.png").is_file()


def _config_refused(ws: Workspace, text: str, *needles: str) -> None:
    from vfusion3d_core.lrm import LRM, CheckpointMismatchError

    ckpt = _copy_checkpoint(ws)
    (ckpt / "config.json").write_text(text)
    with expect(CheckpointMismatchError, str(ckpt / "config.json"), *needles):
        LRM.from_pretrained(ckpt)
    result = generate_cli(ws, str(_image(ws)), "--checkpoint", str(ckpt), "-o", str(ws.inputs / "out"))
    assert_cli_refuses(result, "cannot load the model", str(ckpt / "config.json"), *needles)
    assert not (ws.inputs / "out").exists()


@case("ckpt-config-zero-sizes")
def _(ws: Workspace) -> None:
    cfg = json.loads((lrm_checkpoint(ws) / "config.json").read_text())
    _config_refused(ws, json.dumps(dict(cfg, transformer_heads=0, triplane_dim=-8)), "transformer_heads=0",
                    "triplane_dim=-8")


@case("ckpt-config-not-json")
def _(ws: Workspace) -> None:
    _config_refused(ws, '{"transformer_dim": 64,,}', "not valid JSON at line 1 column 24")


@case("mesh-huge-coordinates", accepted=True)
def _(ws: Workspace) -> None:
    """Coordinates around 1e30 are scaled into the unit ball (float64), not dropped as zero extent."""
    import trimesh

    from vfusion3d_core.objects.listing import load_mesh_folder

    src = ws.inputs / "meshes"
    src.mkdir()
    box = trimesh.creation.box()
    box.apply_scale(1e30)
    box.export(src / "far.obj")
    meshes, skipped = load_mesh_folder(src)
    assert [m.uid for m in meshes] == ["far"] and skipped == [], skipped
    assert abs(meshes[0].bounding_radius - 0.8) < 1e-5


@case("mesh-captions-unknown-uid-and-empty")
def _(ws: Workspace) -> None:
    """Caption rows for uids with no mesh file and empty captions are reported by line in one warning."""
    import warnings

    import trimesh

    from vfusion3d_core.objects.folder import CaptionWarning
    from vfusion3d_core.objects.listing import load_mesh_folder

    src = ws.inputs / "meshes"
    src.mkdir()
    trimesh.creation.box().export(src / "good.obj")
    (src / "captions.csv").write_text("uid,caption\ngood,a box\nnobody,a ghost\ngood2,\n")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        meshes, _ = load_mesh_folder(src)
    assert [m.uid for m in meshes] == ["good"]
    messages = [str(w.message) for w in record if issubclass(w.category, CaptionWarning)]
    assert len(messages) == 1 and "line 3 'nobody'" in messages[0] and "line 4 'good2'" in messages[0], messages
    assert "2 caption row(s) not used as given" in messages[0]


# --- running a case ----------------------------------------------------------------------------------------
def run_case(c: Case, base: Path) -> None:
    """Run one case in a fresh workspace under ``base``; raises AssertionError unless it was handled."""
    ws = build_workspace(base)
    ws.freeze()
    outside = snapshot(ws.outside)
    try:
        c.fn(ws)
    finally:
        if ws.evil.exists():
            ws.evil.unlink()
            raise AssertionError(f"{c.id}: a hostile input created {ws.evil}")
    after = snapshot(ws.root)
    before = ws.frozen
    if c.accepted:  # a new version may be published; every earlier file except the LATEST pointers stays
        before = {k: v for k, v in before.items() if not k.endswith("LATEST.json")}
        after = {k: v for k, v in after.items() if k in before}
    assert after == before, f"{c.id}: previously written artifacts changed: " \
        f"{sorted(set(before.items()) ^ set(after.items()))[:6]}"
    staging = [p for p in ws.root.rglob(".staging/*")]
    assert not staging, f"{c.id}: staging left behind: {staging}"
    assert snapshot(ws.outside) == outside, f"{c.id}: the folder outside the inputs changed"
    assert_not_pwned(ws)
