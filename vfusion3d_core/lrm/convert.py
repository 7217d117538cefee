"""Released VFusion3D checkpoint (OpenLRM naming, transformers-4.42 DINOv2) -> our parameter names."""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

# (pattern, replacement) applied in order; the first matching rule wins for the module prefix.
_PREFIX_RULES: tuple[tuple[str, str], ...] = (
    (r"^encoder\.model\.", "encoder.dino."),
    (r"^camera_embedder\.mlp\.(\d+)\.", r"camera_embedder.net.\1."),
    (r"^transformer\.pos_embed$", "transformer.tokens"),
    (r"^transformer\.layers\.(\d+)\.norm1\.norm\.", r"transformer.blocks.\1.norm_cross.ln."),
    (r"^transformer\.layers\.(\d+)\.norm1\.mlp\.1\.", r"transformer.blocks.\1.norm_cross.proj."),
    (r"^transformer\.layers\.(\d+)\.norm2\.norm\.", r"transformer.blocks.\1.norm_self.ln."),
    (r"^transformer\.layers\.(\d+)\.norm2\.mlp\.1\.", r"transformer.blocks.\1.norm_self.proj."),
    (r"^transformer\.layers\.(\d+)\.norm3\.norm\.", r"transformer.blocks.\1.norm_mlp.ln."),
    (r"^transformer\.layers\.(\d+)\.norm3\.mlp\.1\.", r"transformer.blocks.\1.norm_mlp.proj."),
    (r"^transformer\.layers\.(\d+)\.mlp\.0\.", r"transformer.blocks.\1.mlp.fc1."),
    (r"^transformer\.layers\.(\d+)\.mlp\.3\.", r"transformer.blocks.\1.mlp.fc2."),
    (r"^transformer\.layers\.(\d+)\.(cross_attn|self_attn)\.", r"transformer.blocks.\1.\2."),
    (r"^transformer\.norm\.", "transformer.final_norm."),
    (r"^transformer\.deconv\.", "upsampler.deconv."),
)

# transformers 4.42 DINOv2 attention names -> transformers 5.x names.
_DINO_RULES: tuple[tuple[str, str], ...] = (
    (r"\.attention\.attention\.query\.", ".attention.q_proj."),
    (r"\.attention\.attention\.key\.", ".attention.k_proj."),
    (r"\.attention\.attention\.value\.", ".attention.v_proj."),
    (r"\.attention\.output\.dense\.", ".attention.o_proj."),
)

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


# our name -> released name (inverse of the rules above).
_INVERSE_RULES: tuple[tuple[str, str], ...] = (
    (r"^encoder\.dino\.", "encoder.model."),
    (r"^camera_embedder\.net\.(\d+)\.", r"camera_embedder.mlp.\1."),
    (r"^transformer\.tokens$", "transformer.pos_embed"),
    (r"^transformer\.blocks\.(\d+)\.norm_cross\.ln\.", r"transformer.layers.\1.norm1.norm."),
    (r"^transformer\.blocks\.(\d+)\.norm_cross\.proj\.", r"transformer.layers.\1.norm1.mlp.1."),
    (r"^transformer\.blocks\.(\d+)\.norm_self\.ln\.", r"transformer.layers.\1.norm2.norm."),
    (r"^transformer\.blocks\.(\d+)\.norm_self\.proj\.", r"transformer.layers.\1.norm2.mlp.1."),
    (r"^transformer\.blocks\.(\d+)\.norm_mlp\.ln\.", r"transformer.layers.\1.norm3.norm."),
    (r"^transformer\.blocks\.(\d+)\.norm_mlp\.proj\.", r"transformer.layers.\1.norm3.mlp.1."),
    (r"^transformer\.blocks\.(\d+)\.mlp\.fc1\.", r"transformer.layers.\1.mlp.0."),
    (r"^transformer\.blocks\.(\d+)\.mlp\.fc2\.", r"transformer.layers.\1.mlp.3."),
    (r"^transformer\.blocks\.(\d+)\.(cross_attn|self_attn)\.", r"transformer.layers.\1.\2."),
    (r"^transformer\.final_norm\.", "transformer.norm."),
    (r"^upsampler\.deconv\.", "transformer.deconv."),
)
_INVERSE_DINO_RULES: tuple[tuple[str, str], ...] = (
    (r"\.attention\.q_proj\.", ".attention.attention.query."),
    (r"\.attention\.k_proj\.", ".attention.attention.key."),
    (r"\.attention\.v_proj\.", ".attention.attention.value."),
    (r"\.attention\.o_proj\.", ".attention.output.dense."),
)
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


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Raise CheckpointMismatchError unless ``state_dict`` has exactly the model's keys and shapes."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in sorted(set(expected) & set(state_dict)) if state_dict[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_preview(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_preview(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches: {_preview(shapes)}")
    if problems:
        raise CheckpointMismatchError("checkpoint does not match the model config; " + "; ".join(problems))


def _preview(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... (+{len(items) - limit} more)" if len(items) > limit else "")
