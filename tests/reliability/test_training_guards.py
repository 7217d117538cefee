"""Training guards (docs/reliability.md, "Training guards"): a non-finite loss stops the step with a clear error
(default) or skips it (``on_nonfinite="skip"``), and no poisoned checkpoint is ever written."""

from __future__ import annotations

import pytest
import torch
from bad_input_cases import snapshot
from workloads import train_config, write_shards

from vfusion3d_core.lrm.checkpoint import read_checkpoint
from vfusion3d_core.lrm.train import LRMTrainer, NonFiniteLossError
from vfusion3d_core.lrm.train.checkpoint import list_checkpoints


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> list[str]:
    return [str(p) for p in write_shards(tmp_path_factory.mktemp("guard_data"), 4, 2, seed=11)]


def _poison_steps(trainer: LRMTrainer, calls: set[int]) -> None:
    """Make the loss NaN on the given forward calls (0-based)."""
    forward, count = trainer._forward, [0]

    def poisoned(batch, stage):
        loss, terms = forward(batch, stage)
        count[0] += 1
        return (loss * float("nan"), terms) if count[0] - 1 in calls else (loss, terms)

    trainer._forward = poisoned


def _all_finite(directory) -> bool:
    _, weights = read_checkpoint(directory)
    return all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())


def test_non_finite_loss_raises_and_writes_nothing(shards, tmp_path) -> None:
    trainer = LRMTrainer(train_config(steps=4), shards, tmp_path)
    trainer.train(until_step=2)
    before = snapshot(tmp_path)
    _poison_steps(trainer, {0})
    with pytest.raises(NonFiniteLossError, match="non-finite loss .* at step 2"):
        trainer.train()
    assert snapshot(tmp_path) == before  # no checkpoint written or touched
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000001", "step-00000002"]
    resumed = LRMTrainer(train_config(steps=4), shards, tmp_path)  # the last good checkpoint resumes cleanly
    assert resumed.step == 2 and resumed.train().step == 4


def test_skip_mode_skips_the_step_and_keeps_checkpoints_finite(shards, tmp_path) -> None:
    trainer = LRMTrainer(train_config(steps=4, on_nonfinite="skip"), shards, tmp_path)
    _poison_steps(trainer, {1})
    result = trainer.train()
    assert result.step == 4 and trainer.skipped_steps == 1
    assert trainer.batches == 5  # the poisoned batch was consumed, not retried: resume positions stay exact
    assert all(_all_finite(p) for p in list_checkpoints(tmp_path))
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_skip_mode_gives_up_after_too_many_skips_in_a_row(shards, tmp_path) -> None:
    trainer = LRMTrainer(train_config(steps=10, on_nonfinite="skip", max_skipped_steps=2), shards, tmp_path)
    _poison_steps(trainer, set(range(1, 100)))
    with pytest.raises(NonFiniteLossError, match="3 steps in a row"):
        trainer.train()
    assert trainer.step == 1 and [p.name for p in list_checkpoints(tmp_path)] == ["step-00000001"]
    assert _all_finite(list_checkpoints(tmp_path)[0])


def test_on_nonfinite_is_validated() -> None:
    with pytest.raises(ValueError, match="on_nonfinite"):
        train_config(on_nonfinite="ignore")
