"""Turn a committed artifact version into Dagster materialization results (data version, metadata)."""

from __future__ import annotations

import base64
from pathlib import Path

import dagster as dg

from vfusion3d_core.data import ArtifactStore, ArtifactVersion


def png_markdown(path: Path, title: str) -> str:
    """Markdown for an inline PNG (a data URI: the Dagster UI needs no file access to show it)."""
    return f"![{title}](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()})"


def array_markdown(image, title: str) -> dg.MetadataValue:
    """An inline preview of an in-memory uint8 [H, W, 3] image (not part of the artifact's files)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return dg.MetadataValue.md(f"**{title}**\n\n![{title}](data:image/png;base64,"
                               f"{base64.b64encode(buf.getvalue()).decode()})")


def image_markdown(path: Path, title: str) -> dg.MetadataValue:
    """An inline PNG preview the Dagster UI shows in the asset's metadata."""
    return dg.MetadataValue.md(f"**{title}**\n\n{png_markdown(path, title)}")


def require_latest(store: ArtifactStore, asset: str, partition: str | None = None) -> ArtifactVersion:
    """The current version of an upstream asset, or a Failure telling the user to materialize it."""
    version = store.latest(asset, partition)
    if version is None:
        where = f"{asset}[{partition}]" if partition else asset
        raise dg.Failure(f"{where} has no committed version; materialize it first")
    return version


def materialize_result(version: ArtifactVersion, extra: dict | None = None,
                       data_version: str | None = None) -> dg.MaterializeResult:
    """MaterializeResult whose data version is the manifest digest (or ``data_version``: what downstream partitions
    consume when that is less than the whole version, e.g. prompt_set's published shards)."""
    m = version.manifest
    metadata: dict = {
        "manifest": dg.MetadataValue.path(str(version.path / "manifest.json")),
        "path": dg.MetadataValue.path(str(version.path)),
        "digest": dg.MetadataValue.text(m.digest),
        "code_version": dg.MetadataValue.text(m.code_version),
        "inputs": dg.MetadataValue.json(m.inputs),
        "files": len(m.files),
        "bytes": sum(f.bytes for f in m.files),
        **{f"count/{k}": v for k, v in m.counts.items()},
    }
    if getattr(version, "url", ""):  # an S3 artifact root: where the version lives (path is its local cache copy)
        metadata["url"] = dg.MetadataValue.text(version.url)
    metadata.update(extra or {})
    return dg.MaterializeResult(data_version=dg.DataVersion(data_version or m.digest), metadata=metadata)
