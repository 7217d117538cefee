"""Pretrained model folders on local disk: which paths a scale preset needs, and which weight variant
a folder holds.

``small`` and ``paper`` train from real pretrained models. Rather than fall back to random or
from-scratch networks when a path is missing, ``require_pretrained`` refuses to start and names every
missing path; a from-scratch run must be asked for explicitly (``from_scratch=True``). ``tiny`` builds
small random networks, and every random component is labelled as such where it is reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

PRETRAINED_PRESETS = ("small", "paper")


class MissingPretrainedError(ValueError):
    """A scale preset needs pretrained model folders that were not given (or do not exist)."""


def require_pretrained(preset: str, step: str, paths: Mapping[str, str | None], from_scratch: bool = False,
                       hints: Mapping[str, str] | None = None) -> None:
    """Refuse to start ``step`` at ``preset`` when a needed pretrained path is unset or does not exist.

    ``paths``: config field name -> local directory (or None). At ``small``/``paper`` every unset one is an
    error unless ``from_scratch``; at any preset a set path that is not a directory is an error. The message
    names each field, what it should hold (``hints``) and how to opt out.
    """
    hints = hints or {}
    problems = []
    for name, value in paths.items():
        hint = f" ({hints[name]})" if name in hints else ""
        if value is None or value == "":
            if preset in PRETRAINED_PRESETS and not from_scratch:
                problems.append(f"{name} is not set{hint}")
        elif not str(value).startswith(("s3://", "hf://")) and not Path(value).is_dir():
            problems.append(f"{name}={value!r} is not a directory{hint}")
    if problems:
        opt_out = (f"; or set from_scratch=True to run {step} with randomly initialised networks"
                   if preset in PRETRAINED_PRESETS and not from_scratch else "")
        raise MissingPretrainedError(f"{step} at preset {preset!r} needs pretrained weights: "
                                     + "; ".join(problems) + opt_out)


def weights_variant(directory: str | Path) -> str | None:
    """The diffusers/transformers ``variant`` of the weight files in ``directory``: None when it holds plain
    weights (``*.safetensors`` / ``*.bin``), else the variant of ``NAME.VARIANT.safetensors`` files (e.g.
    'fp16', as many hub downloads hold only ``diffusion_pytorch_model.fp16.safetensors``)."""
    d = Path(directory)
    files = [p.name for p in d.glob("*") if p.suffix in (".safetensors", ".bin") or p.name.endswith(".index.json")]
    plain = [f for f in files if f.count(".") == 1 or (f.endswith(".index.json") and f.count(".") == 2)]
    if plain or not files:
        return None
    variants = sorted({f.split(".")[-2] for f in files if f.count(".") >= 2 and not f.endswith(".json")})
    return variants[0] if variants else None
