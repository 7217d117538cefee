"""Lazy re-exports for package ``__init__`` modules (PEP 562).

A package that re-exports names of its heavy submodules (torch, webdataset, ...) would import them all as soon as
any submodule is imported: ``from vfusion3d_core.data.artifacts import ArtifactStore`` runs
``vfusion3d_core/data/__init__.py`` first. With ``lazy_exports`` the re-exported names are imported on first use
instead, so light modules (the CLI's option declarations, ``vfusion3d --help``) stay light.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, namespace: dict[str, Any],
                 exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` whose names ``exports`` maps to the submodule defining them
    (relative to the package). A name is imported on first access and cached in the package ``namespace``."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__
