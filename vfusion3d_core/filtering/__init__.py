"""Quality filtering of synthetic orbit videos: DINO features, SVM quality classifier, elevation MLP,
posed multi-view extraction.

The names below are imported on first use (``vfusion3d_core.lazy``): importing a light submodule such as
``vfusion3d_core.filtering.label_cli`` (``vfusion3d label --help``) does not import torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vfusion3d_core.lazy import lazy_exports

if TYPE_CHECKING:
    from vfusion3d_core.filtering.bootstrap import CORRUPTIONS, bootstrap_videos, corrupt
    from vfusion3d_core.filtering.extract import (
        FilterRequest,
        FilterResult,
        alpha_from_white,
        filter_videos,
        keep_decisions,
        posed_sample,
        run_filter,
    )
    from vfusion3d_core.filtering.features import DinoConfig, DinoFeaturizer, video_vector
    from vfusion3d_core.filtering.models import (
        LabelsError,
        Orbit,
        QualityModels,
        QualityTrainConfig,
        read_labels_csv,
        stream_video_features,
        train_quality_models,
    )

_EXPORTS = {
    "CORRUPTIONS": "bootstrap", "bootstrap_videos": "bootstrap", "corrupt": "bootstrap",
    "FilterRequest": "extract", "FilterResult": "extract", "alpha_from_white": "extract", "filter_videos": "extract",
    "keep_decisions": "extract", "posed_sample": "extract", "run_filter": "extract",
    "DinoConfig": "features", "DinoFeaturizer": "features", "video_vector": "features",
    "LabelsError": "models", "Orbit": "models", "QualityModels": "models", "QualityTrainConfig": "models",
    "read_labels_csv": "models", "stream_video_features": "models", "train_quality_models": "models",
}
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)

__all__ = ["CORRUPTIONS", "DinoConfig", "DinoFeaturizer", "FilterRequest", "FilterResult", "LabelsError", "Orbit",
           "QualityModels", "QualityTrainConfig", "alpha_from_white", "bootstrap_videos", "corrupt", "filter_videos",
           "keep_decisions", "posed_sample", "read_labels_csv", "run_filter", "stream_video_features",
           "train_quality_models", "video_vector"]
