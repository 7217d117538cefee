"""The LRM training loop: one CPU, one GPU, or many processes through torchrun (DDP).

Recipe (docs/lrm-training.md): multi-stage render resolution with patch crops, LPIPS (+ optional MSE) image loss,
opacity loss, optional triplane TV, camera noise on the source camera, AdamW without decay on
biases/norms, cosine schedule with warm-up, gradient clipping and accumulation, bf16 autocast wherever
bf16 is native (``ComputeSettings``: CUDA, AVX512-BF16/AMX CPUs), optional gradient checkpointing of the
transformer blocks.
Checkpoints are atomic and hold everything needed to continue exactly where training stopped.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from vfusion3d_core.compute import ComputeSettings
from vfusion3d_core.data.files import clean_dead_hidden
from vfusion3d_core.lrm.convert import non_finite_tensors
from vfusion3d_core.lrm.model import LRM
from vfusion3d_core.lrm.presets import get_preset
from vfusion3d_core.lrm.train.checkpoint import (
    CheckpointError,
    list_checkpoints,
    load_training_state,
    save_training_checkpoint,
)
from vfusion3d_core.lrm.train.config import LRMTrainConfig, StageConfig
from vfusion3d_core.lrm.train.data import (
    SKIP_COUNTS,
    MultiviewTrainingStream,
    StreamPosition,
    in_stream_order,
    prepare_targets,
)
from vfusion3d_core.lrm.train.losses import ReconstructionLoss
from vfusion3d_core.lrm.train.optim import build_optimizer, cosine_with_warmup
from vfusion3d_core.steps import MetricLogger

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """The loss or the gradients became NaN/inf; no checkpoint is written from such a step."""


@dataclass
class TrainResult:
    step: int
    losses: list[float] = field(default_factory=list)  # total loss per optimizer step (this process)
    last_metrics: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None
    skipped: dict[str, int] = field(default_factory=dict)  # bad samples / shards skipped by this rank's stream


def distributed_context() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's environment; initializes the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return rank, local, world


def trainer_device(compute: ComputeSettings, local_rank: int, world: int) -> torch.device:
    """The device of this process: ``compute``'s, with CUDA processes of a multi-process run on
    ``cuda:LOCAL_RANK`` (a bare "cuda" or "auto" that resolves to CUDA)."""
    device = compute.torch_device
    if device.type == "cuda" and world > 1 and compute.device in ("auto", "cuda"):
        device = torch.device(f"cuda:{local_rank}")
    return device


class LRMTrainer:
    """Trains an LRM on multi-view shards; resumes from the newest checkpoint in ``out_dir``.

    ``compute`` (default ``ComputeSettings()``: CUDA when present, bf16 where native) sets the device,
    the autocast dtype (bf16 wherever ``compute.dtype`` is bf16, CUDA or a CPU with native bf16, unless
    the recipe's ``bf16`` is False) and gradient checkpointing of the transformer blocks. ``device``, if
    given, overrides ``compute.device``. ``dino_pretrained_path`` (when ``model`` is None): a
    ``Dinov2Model.save_pretrained`` folder the encoder starts from instead of random weights.
    """

    def __init__(self, cfg: LRMTrainConfig, shards: list[str | Path], out_dir: str | Path,
                 model: LRM | None = None, log_fn: MetricLogger | None = None,
                 device: str | torch.device | None = None, resume: bool = True,
                 compute: ComputeSettings | None = None, dino_pretrained_path: str | None = None) -> None:
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.rank, local_rank, self.world = distributed_context()
        compute = compute or ComputeSettings()
        if device is not None:
            compute = ComputeSettings(str(device), compute.precision, compute.gradient_checkpointing)
        self.device = trainer_device(compute, local_rank, self.world)
        self.compute = ComputeSettings(str(self.device), compute.precision, compute.gradient_checkpointing)
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        if model is None:
            model_config = get_preset(cfg.model_preset)
            model_config.dino_pretrained_path = dino_pretrained_path or None
            model = LRM(model_config)
        elif dino_pretrained_path:
            raise ValueError("give either a starting model or dino_pretrained_path, not both")
        self.model = model.to(self.device).train()
        self.model.set_gradient_checkpointing(self.compute.gradient_checkpointing)
        bad = non_finite_tensors(self.model.state_dict())
        if bad:
            raise CheckpointError(f"the initial model holds non-finite weights ({bad[:3]}); refusing to train")
        self.loss_fn = ReconstructionLoss(cfg.lpips_weight, cfg.mse_weight, cfg.opacity_weight, cfg.tv_weight,
                                          cfg.lpips_net, cfg.lpips_random_backbone).to(self.device)
        self.optimizer = build_optimizer(self.model, cfg.lr, cfg.betas, cfg.weight_decay)
        self.scheduler = cosine_with_warmup(self.optimizer, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)
        self.cpu_gen = torch.Generator().manual_seed(cfg.seed * 1000 + self.rank)  # crops, camera noise
        self.dev_gen = torch.Generator(device=self.device).manual_seed(cfg.seed * 1000 + self.rank + 1)  # jitter
        self.step = 0
        self.batches = 0  # micro-batches consumed by this rank: the data position
        self.skipped = {name: 0 for name in SKIP_COUNTS.values()}  # bad items skipped so far (this rank)
        self.skipped_steps = 0  # steps skipped for a non-finite loss (on_nonfinite="skip")
        self._skipped_in_a_row = 0
        self.shards = [str(s) for s in shards]
        self.log_fn = log_fn if self.rank == 0 else None
        self.autocast = cfg.bf16 and self.compute.dtype == torch.bfloat16
        self.ddp = (DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda"
                                            else None, find_unused_parameters=True) if self.world > 1 else None)
        if self.rank == 0:
            clean_dead_hidden(self.out_dir / "checkpoints")  # temporaries / trash of killed runs
        if resume and list_checkpoints(self.out_dir):
            self.load(list_checkpoints(self.out_dir)[-1])

    # --- state ---------------------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "step": self.step, "batches": self.batches, "world_size": self.world,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "cpu_gen": self.cpu_gen.get_state(), "dev_gen": self.dev_gen.get_state(),
            "torch_rng": torch.get_rng_state(), "stage": self.cfg.stage_at(self.step).render_size,
            "skipped": dict(self.skipped),
        }

    def load(self, directory: Path) -> None:
        """Restore model, optimizer, scheduler, RNGs and data position from a checkpoint directory."""
        from vfusion3d_core.lrm.checkpoint import read_checkpoint

        state = load_training_state(directory)
        if state["world_size"] != self.world:
            raise CheckpointError(f"{directory} was written with world size {state['world_size']}, now {self.world}")
        _, weights = read_checkpoint(directory)
        bad = non_finite_tensors(weights)
        if bad:
            raise CheckpointError(f"{directory} holds non-finite weights ({bad[:3]}); refusing to resume")
        self.model.load_state_dict(weights, strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.cpu_gen.set_state(state["cpu_gen"])
        self.dev_gen.set_state(state["dev_gen"])
        torch.set_rng_state(state["torch_rng"])
        self.step, self.batches = int(state["step"]), int(state["batches"])
        self.skipped.update({k: int(v) for k, v in state.get("skipped", {}).items()})
        log.info("resumed from %s at step %d", directory, self.step)

    def save(self) -> Path | None:
        """Write a checkpoint of the current step (rank 0 writes; every rank waits for it)."""
        path = None
        if self.rank == 0:
            path = save_training_checkpoint(self.out_dir, self.step, self.model.state_dict(), self.model.config,
                                            self.cfg, self.state(), self.cfg.keep_checkpoints)
        if self.world > 1:
            dist.barrier()
        return path

    # --- one step ------------------------------------------------------------------------------------
    def _loader(self) -> DataLoader:
        stream = MultiviewTrainingStream(self.shards, self.cfg.views_per_sample, self.model.config.source_size,
                                         self.cfg.seed, self.rank, self.world,
                                         StreamPosition(self.batches, self.cfg.batch_size),
                                         self.cfg.random_background, self.cfg.shuffle_buffer,
                                         self.cfg.max_bad_fraction)
        return DataLoader(stream, batch_size=self.cfg.batch_size, num_workers=self.cfg.num_workers,
                          pin_memory=self.device.type == "cuda")

    def _crop(self, stage: StageConfig) -> tuple[int, int, int, int] | None:
        if stage.patch_size is None or stage.patch_size == stage.render_size:
            return None
        top, left = torch.randint(stage.render_size - stage.patch_size + 1, (2,), generator=self.cpu_gen).tolist()
        return top, left, stage.patch_size, stage.patch_size

    def _forward(self, batch: dict, stage: StageConfig) -> tuple[torch.Tensor, dict[str, float]]:
        image = batch["source_image"].to(self.device)  # [B, 3, S, S]
        source_camera = batch["source_camera"].clone()  # [B, 16]
        if self.cfg.camera_noise_std > 0:
            source_camera[:, :12] += self.cfg.camera_noise_std * torch.randn(source_camera[:, :12].shape,
                                                                             generator=self.cpu_gen)
        cameras = batch["render_cameras"].to(self.device)  # [B, M, 25]
        backgrounds = batch["backgrounds"].to(self.device)  # [B, M, 3]
        crop = self._crop(stage)
        net = self.ddp or self.model
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            out = net(image, source_camera.to(self.device), cameras, stage.render_size, deterministic=False,
                      crop=crop, background=backgrounds, generator=self.dev_gen)
        target_rgb, mask = prepare_targets(batch["target_rgba"].to(self.device), backgrounds, stage.render_size, crop)
        return self.loss_fn(out["rgb"], out["alpha"], target_rgb, mask, out["planes"])

    def _next_batch(self, batches: Iterator[dict]) -> dict:
        """The next micro-batch; the counts of bad items the stream skipped before it go to ``self.skipped``."""
        batch = next(batches)
        self.batches += 1
        for name in SKIP_COUNTS.values():
            self.skipped[name] += int(batch.pop(name).sum()) if name in batch else 0
        return batch

    def _accumulate(self, batches: Iterator[dict], stage: StageConfig) -> tuple[float, dict[str, float], bool]:
        """Forward and backward of ``grad_accum`` micro-batches: (mean loss, the last loss terms, all losses finite).

        A non-finite loss raises NonFiniteLossError unless ``on_nonfinite`` is "skip"."""
        skip = self.cfg.on_nonfinite == "skip"
        total, terms, finite = 0.0, {}, True
        for micro in range(self.cfg.grad_accum):
            batch = self._next_batch(batches)
            sync_ok = self.ddp is None or micro == self.cfg.grad_accum - 1
            ctx = self.ddp.no_sync() if not sync_ok else nullcontext()
            with ctx:
                loss, terms = self._forward(batch, stage)
                if not torch.isfinite(loss):
                    if not skip:
                        raise NonFiniteLossError(f"non-finite loss {float(loss.detach())} at step {self.step} "
                                                 f"({terms})")
                    finite = False  # still run backward: DDP ranks must take part in every all-reduce
                (loss / self.cfg.grad_accum).backward()
            total += float(loss.detach()) / self.cfg.grad_accum
        return total, terms, finite

    def _step_is_finite(self, finite: bool, grad_norm: torch.Tensor) -> bool:
        """Whether this step's losses and gradient norm are finite; with "skip", every rank skips or none does."""
        finite = finite and bool(torch.isfinite(grad_norm))
        if self.cfg.on_nonfinite == "skip" and self.world > 1:
            flag = torch.tensor([float(finite)], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            finite = bool(flag.item() > 0)
        return finite

    def _skip_step(self) -> None:
        """Drop a non-finite step's gradients, or raise NonFiniteLossError (not skipping, or too many in a row)."""
        if self.cfg.on_nonfinite != "skip":
            raise NonFiniteLossError(f"non-finite gradient norm at step {self.step}")
        self.skipped_steps += 1
        self._skipped_in_a_row += 1
        log.warning("skipping step %d: non-finite loss or gradients (%d skipped)", self.step, self.skipped_steps)
        self.optimizer.zero_grad(set_to_none=True)
        if self._skipped_in_a_row > self.cfg.max_skipped_steps:
            raise NonFiniteLossError(f"{self._skipped_in_a_row} steps in a row had a non-finite loss or "
                                     f"gradients (max_skipped_steps={self.cfg.max_skipped_steps})")

    def _log_window(self, window: list[dict[str, float]]) -> dict[str, float]:
        """The means of the steps since the last log, with the skip totals so far; logged and returned."""
        metrics = {k: sum(w[k] for w in window) / len(window) for k in window[0]}
        metrics.update({k: float(v) for k, v in self.skipped.items()})  # totals so far
        if self.log_fn:
            self.log_fn(metrics, self.step)
        log.info("step %d %s", self.step, {k: round(v, 5) for k, v in metrics.items()})
        return metrics

    def train(self, until_step: int | None = None) -> TrainResult:
        """Train to ``until_step`` (default: the configured total); checkpoint every N steps and at the end."""
        until = min(until_step or self.cfg.steps, self.cfg.steps)
        result = TrainResult(self.step)
        if self.step >= until:
            return result
        batches = in_stream_order(iter(self._loader()), self.cfg.num_workers, self.batches)
        window: list[dict[str, float]] = []
        tick = time.perf_counter()
        while self.step < until:
            stage = self.cfg.stage_at(self.step)
            self.optimizer.zero_grad(set_to_none=True)
            total, terms, finite = self._accumulate(batches, stage)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
            if not self._step_is_finite(finite, grad_norm):
                self._skip_step()
                continue
            self._skipped_in_a_row = 0
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            result.losses.append(total)
            now = time.perf_counter()
            samples_per_s = self.cfg.batch_size * self.cfg.grad_accum * self.world / max(now - tick, 1e-9)
            tick = now
            window.append({"loss": total, **terms, "grad_norm": float(grad_norm), "samples_per_s": samples_per_s,
                           "lr": self.scheduler.get_last_lr()[0], "render_size": stage.render_size})
            if self.step % self.cfg.log_every == 0 or self.step == until:
                result.last_metrics = self._log_window(window)
                window = []
            if self.step % self.cfg.checkpoint_every == 0 or self.step == until:
                result.checkpoint = self.save()
        result.step = self.step
        result.skipped = dict(self.skipped)
        return result
