"""Typed requests of the two video steps, shared by the in-process path and the Dagster Pipes entries:
the asset builds one, the entry rebuilds it with ``Request.from_dict(step.extras["request"])``."""

from __future__ import annotations

from dataclasses import dataclass, field

from vfusion3d_core.compute import ComputeSettings
from vfusion3d_core.steps import StepRequest
from vfusion3d_core.video.config import VideoModelConfig
from vfusion3d_core.video.sampler import SampleSettings


@dataclass
class FinetuneRequest(StepRequest):
    """Fine-tune the orbit-video model (`video_model`).

    config: the resolved VideoModelConfig (pretrained folder paths included); render_shards: renders_3d train
    shards (streamed); out_dir: where the model is saved; training_data: input name -> digest (model card);
    checkpoint_dir: resumable checkpoints; preset / from_scratch: the pretrained-weights policy
    (``small``/``paper`` refuse to start without ``svd_path`` and ``image_model_path`` unless from_scratch);
    eval_count: orbits read for the before/after closeness metric; heldout_shards / heldout_count: renders_3d
    held-out shards and how many of their orbits the before/after image -> orbit quality reads (none: not
    measured); compute: device, precision, checkpointing.
    """

    config: VideoModelConfig
    render_shards: list[str]
    out_dir: str
    training_data: dict[str, str] = field(default_factory=dict)
    checkpoint_dir: str | None = None
    preset: str = "tiny"
    from_scratch: bool = False
    eval_count: int = 8
    torch_threads: int | None = None
    compute: ComputeSettings = field(default_factory=ComputeSettings)
    heldout_shards: list[str] = field(default_factory=list)
    heldout_count: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        self.render_shards = [str(s) for s in self.render_shards]
        self.heldout_shards = [str(s) for s in self.heldout_shards]
        if self.heldout_count < 1:
            raise ValueError(f"heldout_count must be >= 1, got {self.heldout_count}")
        self.out_dir = str(self.out_dir)
        if self.checkpoint_dir is not None:
            self.checkpoint_dir = str(self.checkpoint_dir)
        if self.eval_count < 1:
            raise ValueError(f"eval_count must be >= 1, got {self.eval_count}")


@dataclass
class SynthesisRequest(StepRequest):
    """Synthesize one prompt shard (`synthetic_videos`): model_dir/model_digest (the video model version),
    prompt_shard (a parquet prompt shard) and its key ``shard``, out_dir (WebDataset shards land there),
    sampler settings, seeds and shard sizes, and the compute settings."""

    model_dir: str
    model_digest: str
    prompt_shard: str
    shard: str
    out_dir: str
    settings: SampleSettings
    base_seed: int = 0
    samples_per_shard: int = 64
    batch_size: int | None = None
    torch_threads: int | None = None
    compute: ComputeSettings = field(default_factory=ComputeSettings)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("model_dir", "prompt_shard", "out_dir"):
            setattr(self, name, str(getattr(self, name)))
        if self.samples_per_shard < 1 or (self.batch_size is not None and self.batch_size < 1):
            raise ValueError("samples_per_shard and batch_size must be >= 1")
