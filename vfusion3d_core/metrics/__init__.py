"""Evaluation metrics: PSNR / SSIM / LPIPS on images, CLIP image and text similarity, and the held-out
novel-view evaluation of LRM checkpoints that uses them."""

from vfusion3d_core.metrics.clip import ClipScorer
from vfusion3d_core.metrics.image import lpips_distance, psnr, ssim
from vfusion3d_core.metrics.novel_views import (
    HeldoutObject,
    NovelViewScores,
    load_heldout_objects,
    predict_novel_views,
    score_checkpoint,
    turntable_strip,
)

__all__ = ["ClipScorer", "HeldoutObject", "NovelViewScores", "load_heldout_objects", "lpips_distance",
           "predict_novel_views", "psnr", "score_checkpoint", "ssim", "turntable_strip"]
