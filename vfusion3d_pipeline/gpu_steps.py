"""Where `execution: pipes` steps run (the preset resource's ``gpu_steps``): a local subprocess, a
Kubernetes pod or an ECS task, through Dagster Pipes (PipesSubprocessClient / PipesK8sClient /
PipesECSClient). The step itself is a core module (``vfusion3d_core.lrm.train.pipes_entry``,
``vfusion3d_core.video.pipes_entry``, ``vfusion3d_core.video.finetune_pipes_entry``) that needs only
``dagster-pipes``; it reports log lines, per-step
metrics (custom messages) and its final metrics (materialization metadata) back to the asset.
Configuration for clusters: docs/scaling.md.

(No `from __future__ import annotations` in Dagster modules: Dagster resolves config annotations.)
"""

import json
import sys
from collections.abc import Mapping
from typing import Any, Literal

import dagster as dg
from pydantic import Field

BACKENDS = ("subprocess", "k8s", "ecs")
EXECUTION_MODES = ("in_process", "pipes")  # an asset config's ``execution``
Execution = Literal["in_process", "pipes"]
EXECUTION_HELP = ("in_process: this Dagster process | pipes: an external process launched by the preset "
                  "resource's gpu_steps (subprocess, Kubernetes pod or ECS task) through Dagster Pipes.")


def check_execution(execution: str) -> None:
    """Refuse an unknown ``execution`` value of an asset config before any work starts."""
    if execution not in EXECUTION_MODES:
        raise dg.Failure(f"execution must be in_process or pipes, got {execution!r}")


def step_command(module: str, nproc: int = 1, python: str = "python") -> list[str]:
    """The command of one step: the module, or torchrun over ``nproc`` local ranks of it."""
    if nproc > 1:
        return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", module]
    return [python, "-m", module]


def ecs_run_task_params(base: Mapping[str, Any], container: str, command: list[str], env: Mapping[str, str]
                        ) -> dict[str, Any]:
    """RunTask parameters: ``base`` (cluster, taskDefinition, launchType, networkConfiguration, ...) with the
    step's command and environment set on ``container``'s override (other overrides kept)."""
    params = json.loads(json.dumps(dict(base)))
    overrides = params.setdefault("overrides", {}).setdefault("containerOverrides", [])
    mine = next((o for o in overrides if o.get("name") == container), None)
    if mine is None:
        mine = {"name": container}
        overrides.append(mine)
    mine["command"] = command
    kept = [e for e in mine.get("environment", []) if e.get("name") not in env]
    mine["environment"] = kept + [{"name": k, "value": v} for k, v in sorted(env.items())]
    return params


class GpuStepsConfig(dg.Config):
    """How `execution: pipes` steps are launched (``PresetResource.gpu_steps``).

    ``backend``: subprocess (default: this machine, this interpreter) | k8s (a pod from ``image``; needs
    `pip install dagster-k8s`) | ecs (a task of an existing task definition). The step reads and writes
    the paths it is given (the work/staging directory under the artifact cache, shard paths or URLs): on
    a cluster, put the artifacts on S3 and mount the artifact cache (VFUSION3D_ARTIFACT_ROOT) as a shared
    volume at the same path in the pod/task.
    """

    backend: Literal["subprocess", "k8s", "ecs"] = Field(
        "subprocess", description="subprocess: this machine, this interpreter | k8s: a pod from `image` (needs "
                                  "dagster-k8s) | ecs: a task of an existing task definition.")
    python: str | None = Field(None, description="subprocess: the interpreter (unset: the one running Dagster).")
    image: str | None = Field(None, description="k8s: an image with this project installed.")
    namespace: str | None = Field(None, description="k8s: the namespace of the pod (unset: the client's default).")
    base_pod_spec: dict[str, Any] = Field(
        default_factory=dict, description="k8s: PodSpec fields (GPU limits, volumes, nodeSelector, ...).")
    base_pod_spec_json: str = Field("{}", description="Deprecated: base_pod_spec as a JSON string (merged under "
                                                      "base_pod_spec).")
    ecs_run_task: dict[str, Any] = Field(
        default_factory=dict, description="ecs: RunTask parameters (cluster, taskDefinition, launchType, "
                                          "networkConfiguration, ...).")
    ecs_run_task_json: str = Field("{}", description="Deprecated: ecs_run_task as a JSON string (merged under "
                                                     "ecs_run_task).")
    ecs_container: str = Field("vfusion3d", description="ecs: the container of the task definition that runs the "
                                                        "step.")

    def pod_spec(self) -> dict[str, Any]:
        """``base_pod_spec`` over the deprecated ``base_pod_spec_json``."""
        return {**_json_object(self.base_pod_spec_json, "base_pod_spec_json"), **self.base_pod_spec}

    def run_task(self) -> dict[str, Any]:
        """``ecs_run_task`` over the deprecated ``ecs_run_task_json``."""
        return {**_json_object(self.ecs_run_task_json, "ecs_run_task_json"), **self.ecs_run_task}

    def run(self, context: dg.AssetExecutionContext, module: str, extras: dict[str, Any],
            env: Mapping[str, str], nproc: int = 1) -> dg.PipesClientCompletedInvocation:
        if self.backend not in BACKENDS:
            raise dg.Failure(f"unknown gpu_steps backend {self.backend!r}; choose one of {BACKENDS}")
        context.log.info(f"launching {module} through Dagster Pipes ({self.backend}, {nproc} process(es))")
        if self.backend == "subprocess":
            command = step_command(module, nproc, self.python or sys.executable)
            return dg.PipesSubprocessClient().run(context=context, command=command, extras=extras, env=dict(env))
        command = step_command(module, nproc)
        if self.backend == "k8s":
            from dagster_k8s import PipesK8sClient

            return PipesK8sClient().run(context=context, extras=extras, image=self.image, command=command,
                                        namespace=self.namespace, env=dict(env),
                                        base_pod_spec=self.pod_spec())
        from dagster_aws.pipes import PipesECSClient

        params = ecs_run_task_params(self.run_task(), self.ecs_container, command, env)
        return PipesECSClient().run(context=context, run_task_params=params, extras=extras,  # type: ignore[arg-type]
                                    pipes_container_name=self.ecs_container)


def _json_object(text: str, name: str) -> dict[str, Any]:
    """A JSON object from a deprecated ``*_json`` config string; a clear Failure otherwise."""
    try:
        value = json.loads(text or "{}")
    except ValueError as exc:
        raise dg.Failure(f"{name} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise dg.Failure(f"{name} must be a JSON object, got {type(value).__name__}")
    return value


def json_overrides(text: str, overrides: Mapping[str, Any], name: str = "overrides_json") -> dict[str, Any]:
    """An asset config's recipe overrides: the typed ``overrides`` mapping over the deprecated JSON string."""
    return {**_json_object(text, name), **overrides}


def step_report(invocation: dg.PipesClientCompletedInvocation) -> tuple[list[dict], dict[str, Any]]:
    """(per-step metric messages, final metadata as plain values) reported by a Pipes step."""
    messages = [m for m in invocation.get_custom_messages() if isinstance(m, dict) and "metrics" in m]
    metadata: dict[str, Any] = {}
    for result in invocation.get_results():
        metadata.update({k: getattr(v, "value", v) for k, v in (result.metadata or {}).items()})
    return messages, metadata
