"""Data formats: multi-view samples in WebDataset shards, manifests, immutable artifact versions."""

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

__all__ = [
    "ArtifactStore", "ArtifactVersion", "BadItem", "BadItemPolicy", "FileEntry", "Manifest", "ManifestError",
    "MultiviewSample", "SampleError", "ShardError", "ShardWriter", "SkipReport", "TooManyBadItems", "count_samples",
    "file_entries", "iter_decoded", "iter_raw_samples", "iter_samples", "sha256_file",
]
