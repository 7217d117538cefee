"""Dagster resources: where artifacts live and which scale preset runs."""

from __future__ import annotations

import os

import dagster as dg

from vfusion3d_core.data import ArtifactStore

DEFAULT_ARTIFACT_ROOT = "artifacts"
PRESETS = ("tiny", "small", "paper")


class ArtifactStoreResource(dg.ConfigurableResource):
    """The artifact root every asset writes its immutable versions under (a local directory)."""

    root: str = DEFAULT_ARTIFACT_ROOT

    def store(self) -> ArtifactStore:
        return ArtifactStore(os.path.abspath(self.root))


class PresetResource(dg.ConfigurableResource):
    """Scale preset (tiny | small | paper) that supplies every default an asset config leaves unset."""

    name: str = "tiny"

    def validated(self) -> str:
        if self.name not in PRESETS:
            raise dg.Failure(f"unknown preset {self.name!r}; choose one of {PRESETS}")
        return self.name


def default_resources() -> dict[str, dg.ConfigurableResource]:
    """Resources from the environment: VFUSION3D_ARTIFACT_ROOT (default ./artifacts), VFUSION3D_PRESET."""
    return {
        "artifacts": ArtifactStoreResource(root=os.environ.get("VFUSION3D_ARTIFACT_ROOT", DEFAULT_ARTIFACT_ROOT)),
        "preset": PresetResource(name=os.environ.get("VFUSION3D_PRESET", "tiny")),
    }
