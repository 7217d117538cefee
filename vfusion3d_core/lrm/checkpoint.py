"""Checkpoint files: our format (model.safetensors + config.json) and released weight files."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .config import ConfigError, LRMConfig
from .convert import CheckpointMismatchError, unwrap_state_dict

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def save_checkpoint(state_dict: dict[str, torch.Tensor], config: LRMConfig, directory: str | Path) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into ``directory`` (created if needed)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    tmp = out / (WEIGHTS_NAME + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt", "model_type": "vfusion3d_lrm"})
    tmp.replace(out / WEIGHTS_NAME)
    config.save(out / CONFIG_NAME)
    return out


def read_checkpoint(directory: str | Path) -> tuple[LRMConfig, dict[str, torch.Tensor]]:
    """(config, state dict) of a directory written by ``save_checkpoint``; clear errors otherwise."""
    path = Path(directory)
    if not (path / CONFIG_NAME).is_file() or not (path / WEIGHTS_NAME).is_file():
        raise CheckpointMismatchError(f"{path} is not an LRM checkpoint directory "
                                      f"(needs {CONFIG_NAME} and {WEIGHTS_NAME})")
    try:
        config = LRMConfig.load(path / CONFIG_NAME)  # ConfigError messages name the file
    except ConfigError as err:
        raise CheckpointMismatchError(f"not a valid LRM config: {err}") from err
    return config, _load_safetensors(path / WEIGHTS_NAME)


def _load_safetensors(file: Path) -> dict[str, torch.Tensor]:
    """``load_file`` with a clear error naming the file (truncated, lying header, not safetensors at all)."""
    try:
        return load_file(str(file))
    except Exception as err:  # noqa: BLE001 - SafetensorError is not a ValueError/OSError subclass
        raise CheckpointMismatchError(f"cannot read {file} as safetensors ({type(err).__name__}: {err})") from err


def read_weight_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file, or of a torch pickle loaded with ``weights_only=True``."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"weight file not found: {file}")
    if file.suffix == ".safetensors":
        return _load_safetensors(file)
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - surface any unpickling failure as a clear message
        raise CheckpointMismatchError(f"cannot read {file} as a torch weight file: {err}") from err
    if not isinstance(obj, dict):
        raise CheckpointMismatchError(f"{file} does not contain a state dict (got {type(obj).__name__})")
    return dict(unwrap_state_dict(obj))
