"""Released VFusion3D checkpoint (OpenLRM naming, transformers-4.42 DINOv2) -> our parameter names."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

# (released name, our name) prefixes; "{n}" is a layer index. A prefix without a trailing dot is a
# whole name. Both conversion directions are compiled from this one table.
_NAME_PAIRS: tuple[tuple[str, str], ...] = (
    ("encoder.model.", "encoder.dino."),
    ("camera_embedder.mlp.{n}.", "camera_embedder.net.{n}."),
    ("transformer.pos_embed", "transformer.tokens"),
    ("transformer.layers.{n}.norm1.norm.", "transformer.blocks.{n}.norm_cross.ln."),
    ("transformer.layers.{n}.norm1.mlp.1.", "transformer.blocks.{n}.norm_cross.proj."),
    ("transformer.layers.{n}.norm2.norm.", "transformer.blocks.{n}.norm_self.ln."),
    ("transformer.layers.{n}.norm2.mlp.1.", "transformer.blocks.{n}.norm_self.proj."),
    ("transformer.layers.{n}.norm3.norm.", "transformer.blocks.{n}.norm_mlp.ln."),
    ("transformer.layers.{n}.norm3.mlp.1.", "transformer.blocks.{n}.norm_mlp.proj."),
    ("transformer.layers.{n}.mlp.0.", "transformer.blocks.{n}.mlp.fc1."),
    ("transformer.layers.{n}.mlp.3.", "transformer.blocks.{n}.mlp.fc2."),
    ("transformer.layers.{n}.cross_attn.", "transformer.blocks.{n}.cross_attn."),
    ("transformer.layers.{n}.self_attn.", "transformer.blocks.{n}.self_attn."),
    ("transformer.norm.", "transformer.final_norm."),
    ("transformer.deconv.", "upsampler.deconv."),
)

# transformers 4.42 DINOv2 attention names <-> transformers 5.x names (anywhere in the name).
_DINO_PAIRS: tuple[tuple[str, str], ...] = (
    (".attention.attention.query.", ".attention.q_proj."),
    (".attention.attention.key.", ".attention.k_proj."),
    (".attention.attention.value.", ".attention.v_proj."),
    (".attention.output.dense.", ".attention.o_proj."),
)


def _prefix_rule(source: str, target: str) -> tuple[str, str]:
    pattern = "^" + re.escape(source).replace(re.escape("{n}"), r"(\d+)") + ("" if source.endswith(".") else "$")
    return pattern, target.replace("{n}", r"\1")


# (pattern, replacement) applied in order; the first matching rule wins for the module prefix.
_PREFIX_RULES = tuple(_prefix_rule(official, ours) for official, ours in _NAME_PAIRS)
_DINO_RULES = tuple((re.escape(official), ours) for official, ours in _DINO_PAIRS)

_DECODER = re.compile(r"^synthesizer\.decoder\.net\.(\d+)\.(weight|bias)$")


class CheckpointMismatchError(ValueError):
    """A checkpoint does not match the model: unmapped, missing or unexpected keys, or wrong shapes."""


def official_to_ours(name: str) -> str | None:
    """Our parameter name for one released-checkpoint name, or None when no rule applies."""
    match = _DECODER.match(name)
    if match:
        index = int(match.group(1))
        return f"decoder.layers.{index // 2}.{match.group(2)}" if index % 2 == 0 else None
    for pattern, repl in _PREFIX_RULES:
        new, count = re.subn(pattern, repl, name)
        if count:
            if new.startswith("encoder.dino."):
                for dino_pattern, dino_repl in _DINO_RULES:
                    new = re.sub(dino_pattern, dino_repl, new)
            return new
    return None


# our name -> released name: the same tables, read the other way.
_INVERSE_RULES = tuple(_prefix_rule(ours, official) for official, ours in _NAME_PAIRS)
_INVERSE_DINO_RULES = tuple((re.escape(ours), official) for official, ours in _DINO_PAIRS)
_OUR_DECODER = re.compile(r"^decoder\.layers\.(\d+)\.(weight|bias)$")


def ours_to_official(name: str) -> str:
    """Released-checkpoint name of one of our parameters (for exporting in the released layout)."""
    match = _OUR_DECODER.match(name)
    if match:
        return f"synthesizer.decoder.net.{2 * int(match.group(1))}.{match.group(2)}"
    for pattern, repl in _INVERSE_RULES:
        new, count = re.subn(pattern, repl, name)
        if count:
            if new.startswith("encoder.model."):
                for dino_pattern, dino_repl in _INVERSE_DINO_RULES:
                    new = re.sub(dino_pattern, dino_repl, new)
            return new
    raise KeyError(f"no released name for parameter {name}")


def to_official_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict renamed to the released layout (inverse of ``convert_official_state_dict``)."""
    return {ours_to_official(k): v for k, v in state_dict.items()}


def unwrap_state_dict(obj: Mapping) -> Mapping:
    """Accept {'model': sd} / {'state_dict': sd} wrappers and DDP ``module.`` prefixes."""
    for key in ("model", "state_dict", "model_state_dict"):
        if key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def convert_official_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename every tensor of a released checkpoint; raises CheckpointMismatchError on unknown names."""
    state_dict = unwrap_state_dict(state_dict)
    out: dict[str, torch.Tensor] = {}
    unmapped = []
    for name, tensor in state_dict.items():
        new = official_to_ours(name)
        if new is None:
            unmapped.append(name)
        else:
            out[new] = tensor
    if unmapped:
        raise CheckpointMismatchError(f"{len(unmapped)} checkpoint keys have no mapping: {_preview(unmapped)}")
    return out


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str | Path | None = None,
                     name_in_file: Callable[[str], str] | None = None) -> None:
    """Raise CheckpointMismatchError unless ``state_dict`` has exactly the model's keys and shapes.

    ``source``: the file the tensors came from (named in the message); ``name_in_file``: our parameter name
    -> the tensor's name in that file (e.g. ``ours_to_official`` for released weights), shown with ours."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = [f"{_file_name(k, name_in_file)}: expected {tuple(expected[k].shape)} (model config), "
              f"found {tuple(state_dict[k].shape)} (file)"
              for k in sorted(set(expected) & set(state_dict)) if state_dict[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_preview([_file_name(k, name_in_file) for k in missing])}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: "
                        f"{_preview([_file_name(k, name_in_file) for k in unexpected])}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches: {_preview(shapes)}")
    if problems:
        where = f"{source}: " if source is not None else ""
        raise CheckpointMismatchError(where + "checkpoint does not match the model config; " + "; ".join(problems))


def non_finite_tensors(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding NaN/inf (meta tensors carry no values and are skipped)."""
    return [k for k, t in state_dict.items()
            if t.is_floating_point() and not t.is_meta and not bool(torch.isfinite(t).all())]


def check_finite(state_dict: Mapping[str, torch.Tensor], source: str | Path | None = None,
                 name_in_file: Callable[[str], str] | None = None) -> None:
    """Raise CheckpointMismatchError naming ``source`` and every tensor holding NaN/inf (such a model renders
    garbage or NaN meshes). Tensors on the meta device (shape-only checks) carry no values and are skipped."""
    bad = [_file_name(k, name_in_file) for k in non_finite_tensors(state_dict)]
    if bad:
        where = str(source) if source is not None else "the state dict"
        raise CheckpointMismatchError(f"{where} holds non-finite (NaN/inf) weights in {len(bad)} tensor(s): "
                                      f"{_preview(bad)}; refusing to load it")


def _file_name(name: str, name_in_file: Callable[[str], str] | None) -> str:
    """``name``, followed by its name in the file when that differs."""
    if name_in_file is None:
        return name
    try:
        other = name_in_file(name)
    except KeyError:
        return name
    return name if other == name else f"{other} (ours: {name})"


def _preview(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... (+{len(items) - limit} more)" if len(items) > limit else "")
