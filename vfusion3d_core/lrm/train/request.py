"""The typed request of one LRM training run, shared by every way of running it.

The ``lrm_*`` assets build an ``LRMTrainRequest``; the in-process path runs it with ``run_train_request``,
the Dagster Pipes entry point (``pipes_entry``) rebuilds it with ``LRMTrainRequest.from_dict(extras["request"])``
and runs the same function, and the command line (``python -m vfusion3d_core.lrm.train``) builds one from
its flags. What a Pipes step receives is therefore exactly what the in-process path runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vfusion3d_core.compute import ComputeSettings, set_torch_threads
from vfusion3d_core.lrm.train.config import LRMTrainConfig
from vfusion3d_core.lrm.train.losses import lpips_weights_problem
from vfusion3d_core.lrm.train.trainer import LRMTrainer, TrainResult
from vfusion3d_core.pretrained import MissingPretrainedError, require_pretrained
from vfusion3d_core.steps import MetricLogger, StepRequest

DINO_HINT = "a Dinov2Model.save_pretrained folder, e.g. facebook/dinov2-base for `paper`, dinov2-small for `small`"


@dataclass
class LRMTrainRequest(StepRequest):
    """One LRM training run.

    recipe: the training recipe (its ``model_preset`` names the architecture).
    shards: multi-view shard paths or ``s3://`` URLs, streamed.
    work_dir: resumable checkpoints; ``work_dir/final`` holds the model at the end.
    init: starting weights, an LRM directory (``LRM.save_pretrained``) or, with ``init_official``, a
      released VFusion3D weight file (``official_config``: its config.json, optional). None: a new model.
    dino_pretrained_path: without ``init``, the ``Dinov2Model.save_pretrained`` folder the encoder
      starts from (the method's recipe: DINOv2, not frozen). Required at ``small``/``paper`` unless
      ``from_scratch``.
    compute: device, precision (bf16 autocast where native) and gradient checkpointing.
    torch_threads: CPU threads for torch (None: torch's default).
    """

    recipe: LRMTrainConfig
    shards: list[str]
    work_dir: str
    init: str | None = None
    init_official: bool = False
    official_config: str | None = None
    dino_pretrained_path: str | None = None
    from_scratch: bool = False
    compute: ComputeSettings = field(default_factory=ComputeSettings)
    torch_threads: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.shards = [str(s) for s in self.shards]
        self.work_dir = str(self.work_dir)
        if not self.shards:
            raise ValueError("LRMTrainRequest: no shards to train on")
        if self.init_official and not self.init:
            raise ValueError("LRMTrainRequest: init_official needs init (the released weight file)")
        if self.init and self.dino_pretrained_path:
            raise ValueError("LRMTrainRequest: give init (whole-model weights) or dino_pretrained_path, not both")

    def replace(self, **changes) -> LRMTrainRequest:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    def check_starting_point(self) -> None:
        """Refuse before any work (see ``check_training_weights``)."""
        check_training_weights(self.recipe, self.init, self.dino_pretrained_path, self.from_scratch)


def check_training_weights(recipe: LRMTrainConfig, init: str | None, dino_pretrained_path: str | None,
                           from_scratch: bool) -> None:
    """At ``small``/``paper`` refuse a randomly initialised encoder: a run needs ``init`` or
    ``dino_pretrained_path`` unless ``from_scratch`` (``MissingPretrainedError`` naming ``dino_pretrained_path``);
    a set ``dino_pretrained_path`` must be a directory at every preset; an LPIPS loss with a real backbone needs
    its weights in the local torch hub cache. Every problem is named in one ``MissingPretrainedError``."""
    problems = []
    needs = None if init else dino_pretrained_path
    try:
        require_pretrained(recipe.model_preset, "LRM training", {"dino_pretrained_path": needs},
                           from_scratch=from_scratch or bool(init), hints={"dino_pretrained_path": DINO_HINT})
    except MissingPretrainedError as exc:
        problems.append(str(exc))
    if recipe.lpips_weight:
        problems.append(lpips_weights_problem(recipe.lpips_net, recipe.lpips_random_backbone) or "")
    if any(problems):
        raise MissingPretrainedError("; ".join(p for p in problems if p))


@dataclass
class TrainOutcome:
    """What ``run_train_request`` did: the result, the step it resumed from, this process's rank and
    the world size; ``final`` is ``work_dir/final`` (written by rank 0)."""

    result: TrainResult
    resumed_from: int
    rank: int
    world: int
    final: Path


def build_initial_model(request: LRMTrainRequest):
    """The starting LRM of ``request`` (in train mode), or None for a new model built from its preset."""
    from vfusion3d_core.lrm.generate import load_model
    from vfusion3d_core.lrm.model import LRM

    if not request.init:
        return None
    if request.init_official:
        model = load_model(official=Path(request.init), official_config=request.official_config)
    else:
        model = LRM.from_pretrained(request.init)
    return model.train()


def run_train_request(request: LRMTrainRequest, log_fn: MetricLogger | None = None,
                      on_resume: Callable[[int], None] | None = None) -> TrainOutcome:
    """Train as ``request`` says (resuming from ``work_dir``'s newest checkpoint); rank 0 writes
    ``work_dir/final``. Raises ``MissingPretrainedError`` before any work when the starting point is
    missing at ``small``/``paper`` (see ``LRMTrainRequest.check_starting_point``)."""
    request.check_starting_point()
    set_torch_threads(request.torch_threads or None)
    work = Path(request.work_dir)
    trainer = LRMTrainer(request.recipe, request.shards, work, model=build_initial_model(request), log_fn=log_fn,
                         compute=request.compute, dino_pretrained_path=request.dino_pretrained_path)
    resumed = trainer.step
    if resumed and on_resume is not None:
        on_resume(resumed)
    result = trainer.train()
    if trainer.rank == 0:
        trainer.model.save_pretrained(work / "final")
    return TrainOutcome(result, resumed, trainer.rank, trainer.world, work / "final")
