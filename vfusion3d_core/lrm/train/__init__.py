"""LRM training: data stream, losses, optimizer/schedule, atomic checkpoints, the (DDP) trainer."""

from vfusion3d_core.lrm.train.config import LRMTrainConfig, StageConfig
from vfusion3d_core.lrm.train.data import MultiviewTrainingStream, canonicalize_poses
from vfusion3d_core.lrm.train.trainer import LRMTrainer, NonFiniteLossError, TrainResult

__all__ = ["LRMTrainConfig", "LRMTrainer", "MultiviewTrainingStream", "NonFiniteLossError", "StageConfig",
           "TrainResult", "canonicalize_poses"]
