"""The one training-checkpoint writer: whole directories or nothing, the newest `keep` kept, unsafe files refused."""

import pickle

import pytest
import torch

from vfusion3d_core.data.checkpoints import CheckpointError, list_checkpoint_dirs, safe_torch_load, write_checkpoint


def writes(value: int):
    def write(directory):
        torch.save({"value": torch.tensor(value)}, directory / "state.pt")
    return write


def test_checkpoints_are_whole_numbered_and_pruned(tmp_path) -> None:
    for step in (1, 2, 3):
        write_checkpoint(tmp_path, "step-", step, writes(step), keep=2, marker="state.pt")
    found = list_checkpoint_dirs(tmp_path, "step-", "state.pt")
    assert [p.name for p in found] == ["step-00000002", "step-00000003"]
    assert int(safe_torch_load(found[-1] / "state.pt")["value"]) == 3
    write_checkpoint(tmp_path, "step-", 3, writes(30), keep=2, marker="state.pt")  # same step again: replaced
    assert int(safe_torch_load(tmp_path / "step-00000003" / "state.pt")["value"]) == 30


def test_a_failing_writer_leaves_nothing(tmp_path) -> None:
    def half(directory):
        (directory / "state.pt").write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_checkpoint(tmp_path, "step-", 1, half, keep=2, marker="state.pt")
    with pytest.raises(CheckpointError, match="no state.pt"):
        write_checkpoint(tmp_path, "step-", 2, lambda d: None, keep=2, marker="state.pt")
    assert list(tmp_path.iterdir()) == []  # neither a checkpoint nor a temporary


def test_unsafe_pickles_are_refused_by_name(tmp_path) -> None:
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(pickle.Pickler))  # not tensors / plain containers
    with pytest.raises(CheckpointError, match="evil.pt"):
        safe_torch_load(path)
