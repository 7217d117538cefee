"""Text -> image -> orbit-video model (EMU Video's factorization with diffusers classes): build, fine-tune, sample."""

from vfusion3d_core.video.config import VideoModelConfig
from vfusion3d_core.video.data import OrbitData
from vfusion3d_core.video.model import OrbitVideoModel
from vfusion3d_core.video.sampler import SampleSettings, sample_orbits
from vfusion3d_core.video.temporal import freeze_spatial, is_temporal
from vfusion3d_core.video.text_encoder import FrozenTextEncoder
from vfusion3d_core.video.trainer import VideoTrainer

__all__ = ["FrozenTextEncoder", "OrbitData", "OrbitVideoModel", "SampleSettings", "VideoModelConfig", "VideoTrainer",
           "freeze_spatial", "is_temporal", "sample_orbits"]
