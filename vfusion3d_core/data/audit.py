"""Lineage audit: the tree of committed artifacts that produced a version, every digest re-verified.

A manifest's ``inputs`` name what it was made from; keys take these forms:

- ``ASSET`` -> manifest digest of a version of an unpartitioned asset (``ROOT/ASSET/versions/<digest>``);
- ``ASSET/PARTITION`` -> manifest digest of a partition's version (``ROOT/ASSET/PARTITION/versions/...``);
- ``ASSET/NAME`` where ASSET is unpartitioned -> sha256 of one file of some version of ASSET (e.g. a
  prompt shard ``prompt_set/shard-000000``, found by hash among the prompt_set versions);
- anything else (``external:...``, ``official:...``, ``labels_csv``) -> a file outside the artifact root,
  reported with its recorded digest and re-hashed when the manifest's config names its path.

Auditing re-reads every manifest (its stored digest must match its content and the digest its consumer
recorded) and re-hashes every listed file. Nodes reached twice are verified once.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vfusion3d_core.data.artifacts import ArtifactStore
from vfusion3d_core.data.manifest import MANIFEST_NAME, Manifest, ManifestError, sha256_file

OK, CHANGED, MISSING, EXTERNAL = "ok", "changed", "missing", "external"


@dataclass
class AuditNode:
    """One artifact (or file) in the lineage tree."""

    name: str  # "asset", "asset/partition" or "asset/file"
    digest: str
    kind: str = "version"  # version | file | external
    path: str | None = None
    status: str = OK  # ok | changed | missing | external
    counts: dict[str, int] = field(default_factory=dict)
    code_version: str = ""
    problems: list[str] = field(default_factory=list)
    children: list[AuditNode] = field(default_factory=list)
    seen_before: bool = False  # already verified elsewhere in the tree (children not repeated)

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()

    def failures(self) -> list[str]:
        """One line per changed or missing node, naming it."""
        return [f"{n.status.upper()}: {n.name} ({n.digest[:16]}): " + "; ".join(n.problems)
                for n in self.walk() if n.status in (CHANGED, MISSING) and not n.seen_before]

    def to_dict(self) -> dict:
        return asdict(self)


def find_version_dir(path: str | Path) -> Path:
    """The committed version directory holding ``path`` (itself, or the nearest parent with a manifest)."""
    p = Path(path).resolve()
    for candidate in [p, *p.parents]:
        if (candidate / MANIFEST_NAME).is_file() and candidate.parent.name == "versions":
            return candidate
    raise ManifestError(f"{path} is not inside a committed artifact version (no versions/<digest>/manifest.json)")


def artifact_root_of(version_dir: Path, manifest: Manifest) -> Path:
    """ROOT for ROOT/ASSET[/PARTITION]/versions/<digest>."""
    owner = version_dir.parent.parent  # asset dir or partition dir
    if owner.name == manifest.asset:
        return owner.parent
    if owner.parent.name == manifest.asset:
        return owner.parent.parent
    raise ManifestError(f"{version_dir} is not laid out as ROOT/{manifest.asset}[/PARTITION]/versions/<digest>")


class LineageAuditor:
    """Builds and verifies lineage trees over one artifact root."""

    def __init__(self, root: str | Path, remote: Any = None) -> None:
        """``remote``: an S3ArtifactStore whose versions are mirrored as they are (unverified) into ``root``
        when the tree reaches them, then verified like local ones."""
        self.store = ArtifactStore(root)
        self.remote = remote
        self._seen: dict[tuple[str, str], AuditNode] = {}
        self._fetched: set[Path] = set()

    def _fetch(self, version_dir: Path) -> None:
        """Mirror a remote version into ``root`` (once) so it can be verified like a local one."""
        if self.remote is not None and version_dir not in self._fetched:
            self._fetched.add(version_dir)
            if not (version_dir / MANIFEST_NAME).is_file():
                self.remote.mirror(version_dir.relative_to(self.store.root).as_posix(), version_dir)

    def _is_unpartitioned(self, asset: str) -> bool:
        if self.remote is not None:
            return bool(self.remote.version_names(asset))
        return (self.store.root / asset / "versions").is_dir()

    def audit_dir(self, path: str | Path) -> AuditNode:
        """Audit the version that holds ``path`` (a version dir or a file/folder inside one)."""
        version_dir = find_version_dir(path)
        manifest = Manifest.read(version_dir / MANIFEST_NAME)
        owner = version_dir.parent.parent
        name = manifest.asset if owner.name == manifest.asset else f"{manifest.asset}/{owner.name}"
        return self._version_node(name, manifest.digest, version_dir)

    def _version_node(self, name: str, digest: str, version_dir: Path) -> AuditNode:
        key = (name, digest)
        if key in self._seen:
            first = self._seen[key]
            return AuditNode(name, digest, first.kind, first.path, first.status, first.counts, first.code_version,
                             first.problems, seen_before=True)
        node = AuditNode(name, digest, path=str(version_dir))
        self._seen[key] = node
        self._fetch(version_dir)
        if not (version_dir / MANIFEST_NAME).is_file():
            node.status, node.problems = MISSING, [f"no version directory {version_dir}"]
            return node
        try:
            manifest = Manifest.read(version_dir / MANIFEST_NAME)
        except ManifestError as exc:
            node.status, node.problems = CHANGED, [str(exc)]
            return node
        node.counts, node.code_version = dict(manifest.counts), manifest.code_version
        if manifest.digest != digest:
            node.status = CHANGED
            node.problems.append(f"manifest digest is {manifest.digest[:16]}, its consumer recorded {digest[:16]}")
        problems = manifest.verify(version_dir)
        if problems:
            node.status = CHANGED
            node.problems += problems
        for input_name, input_digest in sorted(manifest.inputs.items()):
            node.children.append(self._input_node(input_name, input_digest, manifest))
        return node

    def _input_node(self, name: str, digest: str, consumer: Manifest) -> AuditNode:
        if name in _KNOWN_EXTERNAL or ":" in name:
            return self._external_node(name, digest, consumer)
        asset, _, rest = name.partition("/")
        if any(not part or part.startswith(".") for part in name.split("/")) or rest.count("/"):
            return AuditNode(name, digest, status=MISSING, problems=[f"invalid input name {name!r}"])
        asset_dir = self.store.root / asset
        if not rest:
            return self._version_node(name, digest, asset_dir / "versions" / digest[:16])
        if self._is_unpartitioned(asset):  # an unpartitioned asset: ``rest`` names one of its files
            return self._file_node(name, digest, asset)
        return self._version_node(name, digest, asset_dir / rest / "versions" / digest[:16])

    def _file_node(self, name: str, sha: str, asset: str) -> AuditNode:
        """A file of some version of ``asset`` identified by its sha256 (e.g. one prompt shard)."""
        stem = name.split("/", 1)[1]
        for version_name in self.remote.version_names(asset) if self.remote is not None else []:
            self._fetch(self.store.root / asset / "versions" / version_name)
        for version_dir in self.store.version_dirs(asset):
            try:
                manifest = Manifest.read(version_dir / MANIFEST_NAME)
            except ManifestError:
                continue
            for entry in manifest.files:
                if entry.sha256 == sha and Path(entry.path).stem == stem:
                    path = version_dir / entry.path
                    node = AuditNode(name, sha, "file", str(path))
                    if not path.is_file():
                        node.status, node.problems = MISSING, [f"missing: {entry.path}"]
                    elif sha256_file(path) != sha:
                        node.status, node.problems = CHANGED, [f"changed: {entry.path}"]
                    return node
        return AuditNode(name, sha, "file", status=MISSING,
                         problems=[f"no {asset} version lists a file {stem} with this sha256"])

    @staticmethod
    def _external_node(name: str, sha: str, consumer: Manifest) -> AuditNode:
        node = AuditNode(name, sha, "external", status=EXTERNAL)
        path = consumer.config.get(_KNOWN_EXTERNAL.get(name, ""), None)
        if path and Path(path).is_file():
            node.path = str(path)
            if sha256_file(path) != sha:
                node.status, node.problems = CHANGED, [f"changed: {path}"]
            else:
                node.status = OK
        return node


# External inputs whose path the consumer's manifest config records (input name -> config field).
_KNOWN_EXTERNAL = {"labels_csv": "labels_csv"}


def render_tree(node: AuditNode) -> str:
    """Human-readable tree: name, digest, status, counts."""
    lines: list[str] = []

    def visit(n: AuditNode, prefix: str, last: bool, top: bool) -> None:
        counts = " ".join(f"{k}={v}" for k, v in n.counts.items())
        status = "see above" if n.seen_before else n.status.upper() if n.status != OK else "ok"
        kind = "" if n.kind == "version" else f"[{n.kind}] "
        line = f"{n.name}  {kind}{n.digest[:16]}  {status}" + (f"  {counts}" if counts and not n.seen_before else "")
        lines.append(line if top else prefix + ("└── " if last else "├── ") + line)
        for p in n.problems if not n.seen_before else []:
            lines.append((prefix if top else prefix + ("    " if last else "│   ")) + f"  ! {p}")
        child_prefix = "" if top else prefix + ("    " if last else "│   ")
        for i, c in enumerate(n.children):
            visit(c, child_prefix, i == len(n.children) - 1, False)

    visit(node, "", True, True)
    return "\n".join(lines)


def audit_json(node: AuditNode) -> str:
    return json.dumps({"ok": not node.failures(), "failures": node.failures(), "tree": node.to_dict()}, indent=2)
