"""Data formats: multi-view samples in WebDataset shards, manifests, immutable artifact versions.

The names below are imported on first use (``vfusion3d_core.lazy``): importing one light submodule such as
``vfusion3d_core.data.artifacts`` does not import torch or webdataset."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vfusion3d_core.lazy import lazy_exports

if TYPE_CHECKING:
    from vfusion3d_core.data.artifacts import ArtifactStore, ArtifactVersion
    from vfusion3d_core.data.bad_items import BadItem, BadItemPolicy, SkipReport, TooManyBadItems
    from vfusion3d_core.data.manifest import FileEntry, Manifest, ManifestError, file_entries, sha256_file
    from vfusion3d_core.data.sample import MultiviewSample, SampleError
    from vfusion3d_core.data.shards import (
        ShardError,
        ShardWriter,
        count_samples,
        iter_decoded,
        iter_raw_samples,
        iter_samples,
    )

_EXPORTS = {
    "ArtifactStore": "artifacts", "ArtifactVersion": "artifacts",
    "BadItem": "bad_items", "BadItemPolicy": "bad_items", "SkipReport": "bad_items", "TooManyBadItems": "bad_items",
    "FileEntry": "manifest", "Manifest": "manifest", "ManifestError": "manifest", "file_entries": "manifest",
    "sha256_file": "manifest",
    "MultiviewSample": "sample", "SampleError": "sample",
    "ShardError": "shards", "ShardWriter": "shards", "count_samples": "shards", "iter_decoded": "shards",
    "iter_raw_samples": "shards", "iter_samples": "shards",
}
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)

__all__ = [
    "ArtifactStore", "ArtifactVersion", "BadItem", "BadItemPolicy", "FileEntry", "Manifest", "ManifestError",
    "MultiviewSample", "SampleError", "ShardError", "ShardWriter", "SkipReport", "TooManyBadItems", "count_samples",
    "file_entries", "iter_decoded", "iter_raw_samples", "iter_samples", "sha256_file",
]
