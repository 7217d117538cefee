"""Typed requests of the core steps: one dataclass per step, shared by the in-process path and the
Dagster Pipes entry points (the asset builds the request, the entry point rebuilds it from ``extras``).

A request carries data locations, model paths and the ``ComputeSettings``; it is plain JSON on the wire
(``to_dict`` / ``from_dict``), so what a Pipes step receives is exactly what the in-process path runs.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from vfusion3d_core.compute import ComputeSettings

R = TypeVar("R", bound="StepRequest")
# What a training step reports to: (metrics, step) -> None (MLflow, Dagster Pipes, a log line).
MetricLogger = Callable[[dict[str, float], int], None]


@dataclasses.dataclass
class StepRequest:
    """Base of every step request; subclasses add their fields (JSON types, ``ComputeSettings`` or nested
    config objects with ``to_dict``/``from_dict``)."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if hasattr(value, "to_dict") else _plain(value)
        return out

    def __post_init__(self) -> None:
        """Nested fields given as dicts (JSON) become their annotated class (``ComputeSettings``, configs)."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value, target = getattr(self, f.name), _concrete(hints.get(f.name))
            if isinstance(value, dict) and target is not None and hasattr(target, "from_dict"):
                setattr(self, f.name, target.from_dict(value))

    @classmethod
    def from_dict(cls: type[R], data: dict[str, Any]) -> R:
        """Rebuild from ``to_dict`` output; unknown keys are an error naming them."""
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown fields {unknown}")
        return cls(**data)

def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "__fspath__"):
        return str(value)
    return value


def _concrete(hint: Any) -> type | None:
    """The class of ``X`` or ``X | None`` annotations (None for anything else)."""
    if isinstance(hint, type):
        return hint
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if len(args) == 1 and isinstance(args[0], type) else None


__all__ = ["ComputeSettings", "StepRequest"]
