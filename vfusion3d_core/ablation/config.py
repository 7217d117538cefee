"""Settings of the data-source ablation (docs/ablation.md): populations, video prior, synthesis, LRM arms, seeds.

``mini`` is the report's scale (about 45 minutes on 2 CPU cores); ``smoke`` runs every stage in a couple of
minutes for tests. Every LRM arm gets the same number of optimizer steps (``2 * lrm_steps``) and the same
resolution stages: the one-dataset arms run the recipe stretched to twice its length, the two-phase arms run
it once on their pretraining data and once more, at ``finetune_lr_scale`` of the learning rate, on the 3D set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vfusion3d_core.config import ConfigBase
from vfusion3d_core.lrm.train.config import FINETUNE_LR_SCALE, LRMTrainConfig, StageConfig
from vfusion3d_core.video.config import VideoModelConfig


@dataclass
class AblationConfig(ConfigBase):
    # --- populations: one procedural world, roles disjoint by uid and caption (exact + near duplicate)
    world_seed: int = 1
    heldout_objects: int = 64  # scored on novel views
    validation_objects: int = 32  # learning-rate choice, never the held-out set
    train_objects: int = 16  # the scarce posed 3D set (LRM 3D data and the video model's fine-tune data)
    clip_objects: int = 384  # unposed clips the video prior is pretrained on
    doses: tuple[int, ...] = (0, 250, 1000)  # synthetic videos for the synthetic -> 3D arm; the largest = prompts
    heldout_views: int = 8  # novel views scored per held-out object
    resolution: int = 64
    num_frames: int = 16
    # --- video model: prior on clips (all stages), then the posed fine-tune (temporal layers + first frames)
    # 200 steps keep 26% of the held-out objects' colour saturation, 800 steps 70% (measured, docs/video.md); the
    # committed report ran 200: its verdict is set by the LRM, which even clean data does not help at this budget
    prior_vae_steps: int = 200
    prior_image_steps: int = 250
    prior_video_steps: int = 250
    finetune_image_steps: int = 50
    finetune_video_steps: int = 100
    finetune_image_lr: float = 1e-4
    temporal_lr: float = 2e-4
    video_heldout_orbits: int = 8  # held-out orbits of the image -> orbit quality
    sample_steps: int = 12
    # --- filtering (the quality SVM / elevation MLP trained on the 3D set's orbits, random small DINOv2)
    filter_threshold: float = 0.0
    filter_min_keep_fraction: float = 0.25
    # --- LRM arms
    lrm_steps: int = 100  # per phase; single-phase arms run 2x
    lrm_batch: int = 4
    lr_candidates: tuple[float, ...] = (1e-3, 2e-3, 4e-3)  # chosen on the validation split (3D-only arm)
    finetune_lr_scale: float = FINETUNE_LR_SCALE
    seeds: tuple[int, ...] = (0, 1, 2)
    torch_threads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.doses = tuple(sorted(int(d) for d in self.doses))
        self.lr_candidates = tuple(float(x) for x in self.lr_candidates)
        self.seeds = tuple(int(s) for s in self.seeds)
        if not self.doses or self.doses[0] < 0 or self.max_dose < 1:
            raise ValueError(f"doses must be >= 0 with a positive largest one, got {self.doses}")
        if min(self.heldout_objects, self.validation_objects, self.train_objects, self.clip_objects) < 1:
            raise ValueError("every population needs at least one object")
        if not self.seeds or not self.lr_candidates or self.lrm_steps < 4:
            raise ValueError("need >= 1 seed, >= 1 learning-rate candidate and lrm_steps >= 4")
        if not 1 <= self.heldout_views < self.num_frames:
            raise ValueError(f"heldout_views must be in [1, {self.num_frames - 1}]")

    @property
    def max_dose(self) -> int:
        return self.doses[-1]

    def lrm_recipe(self, lr: float, seed: int) -> LRMTrainConfig:
        """One phase of LRM training: the tiny recipe for ``lrm_steps`` steps, 32 px then 64 px patches."""
        late = max(1, int(self.lrm_steps * 0.75))
        return LRMTrainConfig.preset("tiny", steps=self.lrm_steps, batch_size=self.lrm_batch, lr=lr, seed=seed,
                                     warmup_steps=max(1, self.lrm_steps // 10), checkpoint_every=self.lrm_steps,
                                     stages=[StageConfig(0, 32), StageConfig(late, 64, 32)])

    def video_prior_config(self) -> VideoModelConfig:
        """The video prior: every network from scratch on the clips."""
        return VideoModelConfig.preset("tiny", resolution=self.resolution, num_frames=self.num_frames,
                                       vae_steps=self.prior_vae_steps, image_steps=self.prior_image_steps,
                                       video_steps=self.prior_video_steps, sample_steps=self.sample_steps,
                                       seed=self.world_seed)

    def video_finetune_config(self, prior_path: str) -> VideoModelConfig:
        """The posed fine-tune of the prior: temporal layers of stage 2 (and a short stage-1 adaptation to white
        backgrounds), the VAE kept."""
        base = self.video_prior_config()
        return VideoModelConfig.from_dict({**base.to_dict(), "prior_path": prior_path, "vae_steps": 0,
                                           "image_steps": self.finetune_image_steps, "image_lr": self.finetune_image_lr,
                                           "video_steps": self.finetune_video_steps, "temporal_lr": self.temporal_lr,
                                           "seed": self.world_seed + 1})

    @classmethod
    def presets(cls) -> dict[str, dict[str, Any]]:
        """mini: the committed report (2 CPU cores, ~45 min); smoke: every stage in minutes (tests)."""
        return {
            "mini": {},
            "smoke": dict(heldout_objects=4, validation_objects=3, train_objects=4, clip_objects=6, doses=(0, 4, 8),
                          prior_vae_steps=4, prior_image_steps=4, prior_video_steps=4, finetune_image_steps=2,
                          finetune_video_steps=2, video_heldout_orbits=2, sample_steps=2, lrm_steps=4, lrm_batch=2,
                          lr_candidates=(1e-3, 2e-3), seeds=(0, 1), heldout_views=4),
        }
