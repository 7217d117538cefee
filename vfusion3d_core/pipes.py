"""Dagster Pipes for core steps that run as external processes (GPU training, synthesis).

The orchestrator launches ``python -m vfusion3d_core.<...>.pipes_entry`` through a Pipes client (a local
subprocess, an ECS task, a Kubernetes pod); the step reads its parameters from the Pipes *extras*, logs
and reports per-step metrics as custom messages and its final metrics as materialization metadata.
Needs only the small ``dagster-pipes`` package, never Dagster itself.

Under torchrun every rank reads the extras, but only rank 0 opens the message channel, so the
orchestrator sees one stream of messages per step.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass
class PipesStep:
    """The step's parameters and a reporter that is silent on ranks other than 0."""

    extras: Mapping[str, Any]
    context: Any | None  # dagster_pipes.PipesContext on rank 0, else None

    def log(self, message: str) -> None:
        if self.context is not None:
            self.context.log.info(message)

    def metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Per-step metrics: a custom message the asset turns into MLflow metrics (and a log line)."""
        if self.context is not None:
            self.context.report_custom_message({"step": int(step), "metrics": {k: float(v) for k, v in
                                                                                 metrics.items()}})

    def result(self, metadata: Mapping[str, Any]) -> None:
        """The final result: materialization metadata the asset merges into its own."""
        if self.context is not None:
            # dicts and lists travel as typed JSON metadata; scalars as they are
            self.context.report_asset_materialization(metadata={
                k: {"raw_value": v, "type": "json"} if isinstance(v, dict | list) else v for k, v in metadata.items()})


@contextmanager
def pipes_step() -> Iterator[PipesStep]:
    """Open the Dagster Pipes session of this process (rank 0) or just read its extras (other ranks)."""
    from dagster_pipes import PipesDefaultContextLoader, PipesEnvVarParamsLoader, open_dagster_pipes

    if int(os.environ.get("RANK", "0")) == 0:
        with open_dagster_pipes() as context:
            yield PipesStep(context.extras, context)
    else:
        params = PipesEnvVarParamsLoader().load_context_params()
        with PipesDefaultContextLoader().load_context(params) as data:
            yield PipesStep(data.get("extras") or {}, None)
