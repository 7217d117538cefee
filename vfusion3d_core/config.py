"""The one config base: dataclass configs that round-trip through dicts and JSON files and have scale presets.

A subclass is a ``@dataclass`` whose ``presets()`` returns ``{preset name: field overrides}``; unknown keys in
``from_dict`` are refused by name (a typo never silently becomes a default).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar, TypeVar

C = TypeVar("C", bound="ConfigBase")


class ConfigBase:
    """``to_dict`` / ``from_dict`` / ``save`` / ``load`` / ``preset`` for a dataclass config."""

    # keys a saved file may hold besides the fields (e.g. a type marker), ignored when loading
    EXTRA_KEYS: ClassVar[frozenset[str]] = frozenset()
    ERROR: ClassVar[type[Exception]] = ValueError  # raised for unknown keys

    @classmethod
    def presets(cls) -> dict[str, dict[str, Any]]:
        """Field overrides per scale preset (tiny / small / paper)."""
        return {}

    @classmethod
    def preset(cls: type[C], name: str, **overrides: Any) -> C:
        """The ``name`` preset with ``overrides`` on top."""
        presets = cls.presets()
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(presets)}")
        return cls(**{**presets[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (round-trips through ``from_dict``)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        """Inverse of ``to_dict``; unknown keys raise ``ERROR`` naming them."""
        if not isinstance(data, dict):
            raise cls.ERROR(f"a {cls.__name__} is a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names - cls.EXTRA_KEYS)
        if unknown:
            raise cls.ERROR(f"unknown {cls.__name__} keys: {unknown}")
        return cls(**{k: v for k, v in data.items() if k in names})

    def save(self, path: str | Path) -> None:
        """Write as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))

    @classmethod
    def load(cls: type[C], path: str | Path) -> C:
        """Read a JSON file written by ``save``."""
        return cls.from_dict(json.loads(Path(path).read_text()))
