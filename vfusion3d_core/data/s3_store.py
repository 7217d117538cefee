"""The artifact root on S3 (or any S3-compatible server): the same versions, manifests and digests.

Layout under ``s3://BUCKET/PREFIX`` is the local one (docs/data-format.md)::

    PREFIX/ASSET[/PARTITION]/versions/<digest[:16]>/...   the files, then manifest.json
    PREFIX/ASSET[/PARTITION]/LATEST.json                  the pointer, written last

Writers stage locally, exactly as with the local store, then ``commit`` uploads every file, then
``manifest.json``, then ``LATEST.json``. Single-object PUTs are atomic, so the pointer is the commit
point: a run killed mid-upload leaves objects of an unreferenced version that the next identical run
overwrites byte for byte, and readers keep seeing the previous version.

Readers get an ``S3ArtifactVersion`` whose ``path`` is a local, read-only cache copy of the version
(``CACHE/ASSET[/PARTITION]/versions/<v>``, the local layout): each file is downloaded, its size and
sha256 checked against the manifest, and the directory renamed into place only when complete, so every
consumer that reads ``version.path`` works unchanged. Shards can instead be streamed by URL into
WebDataset without a local copy (``latest(..., materialize=False)`` + ``shard_locations``): the
``s3://`` scheme is registered with WebDataset's ``gopen`` by ``register_webdataset_scheme``.

Credentials come from the environment (boto3's chain: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a
profile, an instance role); nothing here reads, logs or writes them. No Dagster import: the pipeline
passes in the boto3 client built by dagster-aws's S3Resource.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from vfusion3d_core.data.artifacts import LATEST_NAME, ArtifactStore, ArtifactVersion
from vfusion3d_core.data.files import pid_alive
from vfusion3d_core.data.manifest import MANIFEST_NAME, Manifest, ManifestError, sha256_file

ENV_BUCKET = "VFUSION3D_S3_BUCKET"
ENV_PREFIX = "VFUSION3D_S3_PREFIX"
ENV_ENDPOINT = "VFUSION3D_S3_ENDPOINT_URL"
ENV_REGION = "VFUSION3D_S3_REGION"
_FETCH_DIR = ".fetch"  # hidden per-asset folder for downloads in progress
_TAR_END = 1024  # a complete tar ends with (at least) two zero 512-byte blocks


@dataclass(frozen=True)
class S3ArtifactVersion(ArtifactVersion):
    """A committed version on S3: ``path`` is its local cache copy, ``url`` the version's ``s3://`` prefix."""

    url: str = ""

    def url_of(self, relpath: str) -> str:
        return f"{self.url}/{relpath}"


def split_url(url: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key)."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3:// URL: {url!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def _not_found(exc: Exception) -> bool:
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    return code in ("NoSuchKey", "404", "NotFound")


# --- boto3 clients: the pipeline registers the one dagster-aws built; subprocesses build one from env ----

_clients: dict[tuple[int, str], Any] = {}
_lock = threading.Lock()


def register_client(bucket: str, client: Any) -> None:
    """Use ``client`` for ``s3://bucket/...`` URLs opened by this process (e.g. WebDataset streams)."""
    with _lock:
        _clients[(os.getpid(), bucket)] = client


def client_for(bucket: str) -> Any:
    """The registered client for ``bucket`` in this process, else one from the environment
    (VFUSION3D_S3_ENDPOINT_URL, VFUSION3D_S3_REGION, and boto3's own credential chain). Clients are not
    shared across fork (DataLoader workers build their own)."""
    with _lock:
        client = _clients.get((os.getpid(), bucket))
        if client is None:
            import boto3

            client = boto3.session.Session().client("s3", endpoint_url=os.environ.get(ENV_ENDPOINT) or None,
                                                    region_name=os.environ.get(ENV_REGION) or None)
            _clients[(os.getpid(), bucket)] = client
        return client


def open_url(url: str, mode: str = "rb", bufsize: int = 8192, **_: Any):
    """A streaming, read-only file object for an ``s3://`` URL (WebDataset's gopen handler signature)."""
    if mode != "rb":
        raise ValueError(f"{url}: s3:// URLs are read-only here (mode {mode!r})")
    bucket, key = split_url(url)
    return client_for(bucket).get_object(Bucket=bucket, Key=key)["Body"]


def register_webdataset_scheme() -> None:
    """Let ``webdataset.WebDataset("s3://...")`` stream objects through boto3 (idempotent)."""
    import importlib

    # the module, not the function of the same name that webdataset's __init__ re-exports
    importlib.import_module("webdataset.gopen").gopen_schemes["s3"] = open_url


def remote_tar_problem(url: str) -> str | None:
    """Why the object at ``url`` is not a complete tar (None when it looks complete): its size must be a
    whole number of 512-byte blocks and it must end with the two zero blocks of the end-of-archive
    marker (a tar cut at a member boundary otherwise reads as a shorter valid archive)."""
    bucket, key = split_url(url)
    client = client_for(bucket)
    try:
        size = client.head_object(Bucket=bucket, Key=key)["ContentLength"]
    except Exception as exc:
        return f"cannot stat: {exc}"
    if size < _TAR_END or size % 512:
        return f"truncated tar shard ({size} bytes)"
    tail = client.get_object(Bucket=bucket, Key=key, Range=f"bytes={size - _TAR_END}-{size - 1}")["Body"].read()
    if len(tail) != _TAR_END or tail.count(0) != _TAR_END:
        return "truncated tar shard (no end-of-archive marker)"
    return None


def shard_locations(version: ArtifactVersion, folder: str = "", suffix: str = ".tar") -> list[str]:
    """Where to read a version's shards from: ``s3://`` URLs for an S3 version (streamed, never copied),
    local paths otherwise. ``folder`` limits to files under it (e.g. "train")."""
    files = sorted(f.path for f in version.manifest.files
                   if f.path.endswith(suffix) and (not folder or f.path.startswith(f"{folder}/")))
    if isinstance(version, S3ArtifactVersion) and version.url:
        return [version.url_of(f) for f in files]
    return [str(version.path / f) for f in files]


class S3ArtifactStore(ArtifactStore):
    """Artifact root at ``s3://bucket/prefix`` with a local cache/work directory ``cache_root``.

    Staging, ``.work`` / ``.checkpoints`` resumable work directories and the version cache live under
    ``cache_root`` (the ``root`` of the local store API); committed versions live on S3.
    """

    def __init__(self, client: Any, bucket: str, prefix: str, cache_root: str | Path, workers: int = 8) -> None:
        super().__init__(cache_root)
        if not bucket:
            raise ValueError("an S3 artifact store needs a bucket")
        self.client, self.bucket, self.prefix = client, bucket, prefix.strip("/")
        self.workers = workers
        register_client(bucket, client)
        register_webdataset_scheme()

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def key(self, asset: str, partition: str | None = None, *rest: str) -> str:
        self.asset_dir(asset, partition)  # validates the names
        return "/".join(p for p in (self.prefix, asset, partition, *rest) if p)

    def _get(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except Exception as exc:
            if _not_found(exc):
                return None
            raise

    def _exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if _not_found(exc):
                return False
            raise
        return True

    def _subfolders(self, key_prefix: str) -> list[str]:
        names = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=key_prefix,
                                                                            Delimiter="/"):
            names += [p["Prefix"][len(key_prefix):].rstrip("/") for p in page.get("CommonPrefixes", [])]
        return sorted(names)

    # --- writing ---------------------------------------------------------------------------------------

    def commit(self, staging_dir: Path, manifest: Manifest, asset: str, partition: str | None = None
               ) -> S3ArtifactVersion:
        """Upload the staged files, then manifest.json, then LATEST.json (the commit point); the staged
        directory becomes the version's local cache copy.

        Commits of one asset/partition on this machine are serialized by the local store's lock file.
        Across machines, object PUTs are atomic and every version has its own key prefix, so concurrent
        commits each publish a whole version and the last pointer written wins (the same content twice
        writes the same bytes to the same keys)."""
        manifest.write(staging_dir)
        name = manifest.digest[:16]
        base = self.key(asset, partition, "versions", name)
        local_base = self.asset_dir(asset, partition)
        target = local_base / "versions" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(local_base / ".commit.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            existing = self._get(f"{base}/{MANIFEST_NAME}")
            if existing is not None:
                # Same content already published (identical re-run): keep it, after checking it is that content.
                url = f"s3://{self.bucket}/{base}/{MANIFEST_NAME}"
                if Manifest.from_json(existing, url).digest != manifest.digest:
                    raise ManifestError(f"s3://{self.bucket}/{base} exists but does not match the new version; "
                                        "refusing to overwrite")
            else:
                def upload(relpath: str, sha: str) -> None:
                    self.client.upload_file(str(staging_dir / relpath), self.bucket, f"{base}/{relpath}",
                                            ExtraArgs={"Metadata": {"sha256": sha}})

                with ThreadPoolExecutor(self.workers) as pool:
                    list(pool.map(lambda f: upload(f.path, f.sha256), manifest.files))
                self.client.put_object(Bucket=self.bucket, Key=f"{base}/{MANIFEST_NAME}", Body=manifest.to_json(),
                                       ContentType="application/json")
            pointer = {"version": name, "digest": manifest.digest, "run_id": manifest.run_id}
            self.client.put_object(Bucket=self.bucket, Key=self.key(asset, partition, LATEST_NAME),
                                   Body=json.dumps(pointer, indent=2).encode(), ContentType="application/json")
            if target.exists():
                shutil.rmtree(staging_dir, ignore_errors=True)
            else:
                os.replace(staging_dir, target)
        return self._version(asset, partition, name, manifest)

    # --- reading ---------------------------------------------------------------------------------------

    def _version(self, asset: str, partition: str | None, name: str, manifest: Manifest) -> S3ArtifactVersion:
        return S3ArtifactVersion(self.asset_dir(asset, partition) / "versions" / name, manifest,
                                 url=f"s3://{self.bucket}/{self.key(asset, partition, 'versions', name)}")

    def _remote_manifest(self, asset: str, partition: str | None, name: str) -> Manifest:
        key = self.key(asset, partition, "versions", name, MANIFEST_NAME)
        data = self._get(key)
        if data is None:
            raise ManifestError(f"s3://{self.bucket}/{key}: no manifest")
        return Manifest.from_json(data, f"s3://{self.bucket}/{key}")

    def latest(self, asset: str, partition: str | None = None, materialize: bool = True
               ) -> S3ArtifactVersion | None:
        """The current version (None if never committed); with ``materialize`` its files are in the local
        cache at ``version.path``, verified; without, only ``version.manifest`` and ``version.url`` are."""
        data = self._get(self.key(asset, partition, LATEST_NAME))
        if data is None:
            return None
        info = json.loads(data)
        manifest = self._remote_manifest(asset, partition, info["version"])
        if manifest.digest != info["digest"]:
            raise ManifestError(f"{self.url}/{self.key(asset, partition, LATEST_NAME)} points at digest "
                                f"{info['digest'][:12]} but the version holds {manifest.digest[:12]}")
        version = self._version(asset, partition, info["version"], manifest)
        if materialize:
            self.materialize(version)
        return version

    def version(self, asset: str, digest: str, partition: str | None = None, materialize: bool = True
                ) -> S3ArtifactVersion:
        """A specific version by (a prefix of at least 16 chars of) its digest."""
        manifest = self._remote_manifest(asset, partition, digest[:16])
        if not manifest.digest.startswith(digest):
            raise ManifestError(f"{asset}{'/' + partition if partition else ''} version {digest[:16]} holds "
                                f"digest {manifest.digest[:12]}, not {digest[:12]}")
        version = self._version(asset, partition, digest[:16], manifest)
        if materialize:
            self.materialize(version)
        return version

    def partitions(self, asset: str) -> list[str]:
        """Partition keys of ``asset`` that have a committed version (a LATEST.json), sorted."""
        base = self.key(asset) + "/"
        return [p for p in self._subfolders(base)
                if p != "versions" and not p.startswith(".") and self._exists(f"{base}{p}/{LATEST_NAME}")]

    def version_dirs(self, asset: str, partition: str | None = None) -> list[Path]:
        """Every committed version of ``asset`` (or one partition), each materialized in the cache, sorted."""
        names = self._subfolders(self.key(asset, partition, "versions") + "/")
        return [self.version(asset, n, partition).path for n in names
                if self._exists(self.key(asset, partition, "versions", n, MANIFEST_NAME))]

    def materialize(self, version: S3ArtifactVersion) -> Path:
        """Make ``version.path`` a complete local copy: download each file, check size and sha256 against
        the manifest, write the manifest last and rename the directory into place (concurrent readers
        of the same version race harmlessly: the first rename wins)."""
        target = version.path
        if (target / MANIFEST_NAME).is_file() and Manifest.read(target / MANIFEST_NAME).digest == version.digest:
            return target
        tmp = target.parent.parent / _FETCH_DIR / f"{os.getpid()}-{uuid.uuid4().hex}"
        tmp.mkdir(parents=True)
        try:
            def fetch(relpath: str) -> None:
                entry = version.manifest.file(relpath)
                local = tmp / relpath
                local.parent.mkdir(parents=True, exist_ok=True)
                bucket, key = split_url(version.url_of(relpath))
                try:
                    self.client.download_file(bucket, key, str(local))
                except Exception as exc:
                    raise ManifestError(f"{version.url_of(relpath)}: cannot download: {exc}") from exc
                if local.stat().st_size != entry.bytes or sha256_file(local) != entry.sha256:
                    raise ManifestError(f"{version.url_of(relpath)} does not match its manifest hash")

            with ThreadPoolExecutor(self.workers) as pool:
                list(pool.map(fetch, [f.path for f in version.manifest.files]))
            version.manifest.write(tmp)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(tmp, target)
            except OSError:
                if not (target / MANIFEST_NAME).is_file():  # someone else's partial copy: never trust it
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    def clean_staging(self, asset: str, partition: str | None = None) -> int:
        """Remove staging and download directories left by dead processes (local cache only)."""
        removed = super().clean_staging(asset, partition)
        fetching = self.asset_dir(asset, partition) / _FETCH_DIR
        if fetching.is_dir():
            for p in fetching.iterdir():
                if not pid_alive(p.name.split("-", 1)[0]):
                    shutil.rmtree(p, ignore_errors=True)
                    removed += 1
        return removed

    def mirror(self, relative_dir: str, dest: Path) -> bool:
        """Copy every object under ``PREFIX/relative_dir/`` into ``dest`` as it is, without verification
        (for `vfusion3d audit`, which verifies it itself). Returns False when there is none."""
        key_prefix = "/".join(p for p in (self.prefix, relative_dir.strip("/")) if p) + "/"
        keys = [o["Key"] for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=key_prefix) for o in page.get("Contents", [])]
        for key in keys:
            local = dest / key[len(key_prefix):]
            local.parent.mkdir(parents=True, exist_ok=True)
            self.client.download_file(self.bucket, key, str(local))
        return bool(keys)

    def version_names(self, asset: str, partition: str | None = None) -> list[str]:
        return self._subfolders(self.key(asset, partition, "versions") + "/")
