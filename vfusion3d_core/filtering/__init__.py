"""Quality filtering of synthetic orbit videos: DINO features, SVM quality classifier, elevation MLP,
posed multi-view extraction."""

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

__all__ = ["CORRUPTIONS", "DinoConfig", "DinoFeaturizer", "FilterRequest", "FilterResult", "LabelsError", "Orbit",
           "QualityModels", "QualityTrainConfig", "alpha_from_white", "bootstrap_videos", "corrupt", "filter_videos",
           "keep_decisions", "posed_sample", "read_labels_csv", "run_filter", "stream_video_features",
           "train_quality_models", "video_vector"]
