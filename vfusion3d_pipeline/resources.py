"""Dagster resources: where artifacts live and which scale preset runs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum

import dagster as dg
from pydantic import Field

from vfusion3d_core.compute import ComputeSettings
from vfusion3d_core.data import ArtifactStore
from vfusion3d_core.data.artifacts import default_tracking_uri
from vfusion3d_core.redact import redact_text
from vfusion3d_pipeline.gpu_steps import GpuStepsConfig
from vfusion3d_pipeline.tracking import MLflowRun, local_artifact_location, mlflow_run

DEFAULT_ARTIFACT_ROOT = "artifacts"
PRESETS = ("tiny", "small", "paper")


class Precision(StrEnum):
    """A step's precision override (an enum: Dagster config has no optional Literal; a StrEnum equals its string)."""

    auto = "auto"
    bf16 = "bf16"
    fp32 = "fp32"


class ArtifactStoreResource(dg.ConfigurableResource):
    """The artifact root every asset writes its immutable versions under: a local directory, or
    ``s3://s3_bucket/s3_prefix`` when ``s3_bucket`` is set (then ``root`` is the local cache and work
    directory: staging, resumable ``.work`` / ``.checkpoints`` and verified copies of versions read).
    S3 credentials come from the environment only (boto3's chain), never from this config."""

    root: str = Field(DEFAULT_ARTIFACT_ROOT, description="Artifact root directory (with s3_bucket: the local cache "
                                                         "and work directory).")
    s3_bucket: str | None = Field(None, description="S3 bucket holding the versions (unset: artifacts stay local).")
    s3_prefix: str = Field("", description="Key prefix of the artifact root inside s3_bucket.")
    s3_endpoint_url: str | None = Field(None, description="An S3-compatible server (MinIO, moto, ...); unset = AWS.")
    s3_region: str | None = Field(None, description="S3 region (unset: boto3's default).")

    def store(self) -> ArtifactStore:
        root = os.path.abspath(self.root)
        if not self.s3_bucket:
            return ArtifactStore(root)
        from dagster_aws.s3 import S3Resource

        from vfusion3d_core.data.s3_store import S3ArtifactStore

        client = S3Resource(endpoint_url=self.s3_endpoint_url, region_name=self.s3_region).get_client()
        return S3ArtifactStore(client, self.s3_bucket, self.s3_prefix, root)

    def subprocess_env(self) -> dict[str, str]:
        """Where a child process (Pipes step, torchrun) finds the store: the S3 location, never credentials
        (the child inherits those from the environment like any boto3 program)."""
        from vfusion3d_core.data import s3_store

        if not self.s3_bucket:
            return {}
        env = {s3_store.ENV_BUCKET: self.s3_bucket, s3_store.ENV_PREFIX: self.s3_prefix}
        env.update({k: v for k, v in {s3_store.ENV_ENDPOINT: self.s3_endpoint_url,
                                      s3_store.ENV_REGION: self.s3_region}.items() if v})
        return env


class PresetResource(dg.ConfigurableResource):
    """Scale preset (tiny | small | paper) that supplies every default an asset config leaves unset, and
    where GPU steps with ``execution: pipes`` run (``gpu_steps``: a local subprocess by default, or a
    Kubernetes pod / ECS task; docs/scaling.md)."""

    name: str = Field("tiny", description="Scale preset: tiny | small | paper (docs/presets.md).")
    gpu_steps: GpuStepsConfig = Field(GpuStepsConfig(), description="Where `execution: pipes` steps run: a local "
                                                                     "subprocess, a Kubernetes pod or an ECS task.")

    def validated(self) -> str:
        if self.name not in PRESETS:
            raise dg.Failure(f"unknown preset {self.name!r}; choose one of {PRESETS}")
        return self.name


class ComputeResource(dg.ConfigurableResource):
    """Where every core step runs and in which precision (assets override per run with their own
    ``device`` / ``precision`` / ``gradient_checkpointing`` config fields)."""

    device: str = Field("auto", description="auto (CUDA when present, else cpu) | cpu | cuda | cuda:N.")
    precision: str = Field("auto", description="auto (bf16 where native: GPU tensor cores, AVX512-BF16/AMX CPUs; "
                                               "else fp32) | bf16 | fp32.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations of the video UNets / LRM "
                                                            "transformer (less memory, more compute).")

    def settings(self, override: StepComputeConfig | None = None) -> ComputeSettings:
        """This resource's settings with a step's non-null overrides applied; a clear Failure when invalid."""
        values = {"device": self.device, "precision": self.precision,
                  "gradient_checkpointing": self.gradient_checkpointing}
        if override is not None:
            precision = None if override.precision is None else str(override.precision)
            values.update({k: v for k, v in (("device", override.device), ("precision", precision),
                                             ("gradient_checkpointing", override.gradient_checkpointing))
                           if v is not None})
        try:
            settings = ComputeSettings(**values)
            settings.torch_device  # noqa: B018 - resolve now: an unavailable device fails before any work
        except (ValueError, RuntimeError) as exc:
            raise dg.Failure(f"invalid compute settings {values}: {exc}") from exc
        return settings


class StepComputeConfig(dg.Config):
    """Per-asset overrides of the ``compute`` resource (unset = the resource's value)."""

    device: str | None = Field(None, description="auto | cpu | cuda | cuda:N for this step (unset: the compute "
                                                 "resource's).")
    precision: Precision | None = Field(
        None, description="auto (bf16 where native, else fp32) | bf16 | fp32 for this step (unset: the compute "
                          "resource's).")
    gradient_checkpointing: bool | None = Field(None, description="Recompute activations to save memory (unset: "
                                                                  "the compute resource's).")


class MLflowResource(dg.ConfigurableResource):
    """MLflow tracking: a sqlite store under the artifact root unless ``tracking_uri`` is set."""

    tracking_uri: str | None = Field(None, description="MLflow tracking URI (unset: sqlite under artifact_root).")
    experiment: str = Field("vfusion3d", description="MLflow experiment every asset run is logged to.")
    artifact_root: str = Field(DEFAULT_ARTIFACT_ROOT, description="Artifact root holding the default sqlite store "
                                                                  "and mlflow-artifacts/.")

    def uri(self) -> str:
        return env_value(self.tracking_uri) or default_tracking_uri(env_value(self.artifact_root))

    @contextmanager
    def run_for(self, context: dg.AssetExecutionContext, run_name: str | None = None) -> Iterator[MLflowRun]:
        """An MLflow run tagged with the Dagster run id, asset key(s) and partition key, nested under the Dagster
        run's own MLflow run."""
        keys = ",".join(k.to_user_string() for k in context.selected_asset_keys)
        tags = {"dagster.run_id": context.run.run_id, "dagster.asset_key": keys,
                "dagster.job": context.run.job_name}
        if context.has_partition_key:
            tags["dagster.partition_key"] = context.partition_key
        location = local_artifact_location(self.uri(), self.artifact_root)  # None: a tracking server's own root
        with mlflow_run(self.uri(), self.experiment, run_name or keys, tags, location,
                        dagster_run=(context.run.run_id, context.run.job_name)) as run:
            context.log.info(f"MLflow run {run.run_id} ({redact_text(self.uri())})")  # no password in logs
            yield run


def env_value(value):
    """A config value as the run would see it: an ``EnvVar`` resolved from the environment now (code outside a
    run, e.g. the recovery sensor, reads a resource of ``default_resources`` directly), else itself."""
    return value.get_value() if isinstance(value, dg.EnvVar) else value


def _from_env(name: str, default=None):
    """``dg.EnvVar(name)`` when the variable is set (non-empty), else ``default``: the value is then read from the
    run worker's environment when the resource is initialized (and the launchpad shows the variable's name, never
    its value), while an unset optional variable keeps the default (an EnvVar of an unset variable would fail at
    resource init)."""
    return dg.EnvVar(name) if os.environ.get(name) else default


def default_resources() -> dict[str, dg.ConfigurableResource]:
    """Resources from the environment: VFUSION3D_ARTIFACT_ROOT (default ./artifacts; the local cache when on
    S3), VFUSION3D_S3_BUCKET / _PREFIX / _ENDPOINT_URL / _REGION (artifacts on S3 when the bucket is set),
    VFUSION3D_PRESET, MLFLOW_TRACKING_URI (default: sqlite under the artifact root), VFUSION3D_GPU_STEPS (where
    execution=pipes steps run: subprocess | k8s | ecs; cluster settings in docs/scaling.md), VFUSION3D_DEVICE /
    VFUSION3D_PRECISION (the compute resource: auto | cpu | cuda[:N], auto | bf16 | fp32).

    Each is a ``dg.EnvVar`` when set (resolved at run time), else the default. VFUSION3D_GPU_STEPS is read here,
    at load: ``backend`` is a closed choice (a Literal), which an EnvVar cannot fill."""
    root = _from_env("VFUSION3D_ARTIFACT_ROOT", DEFAULT_ARTIFACT_ROOT)
    return {
        "artifacts": ArtifactStoreResource(root=root, s3_bucket=_from_env("VFUSION3D_S3_BUCKET"),
                                           s3_prefix=_from_env("VFUSION3D_S3_PREFIX", ""),
                                           s3_endpoint_url=_from_env("VFUSION3D_S3_ENDPOINT_URL"),
                                           s3_region=_from_env("VFUSION3D_S3_REGION")),
        "preset": PresetResource(name=_from_env("VFUSION3D_PRESET", "tiny"),
                                 gpu_steps=GpuStepsConfig(backend=os.environ.get("VFUSION3D_GPU_STEPS")
                                                          or "subprocess")),
        "compute": ComputeResource(device=_from_env("VFUSION3D_DEVICE", "auto"),
                                   precision=_from_env("VFUSION3D_PRECISION", "auto")),
        "mlflow": MLflowResource(tracking_uri=_from_env("MLFLOW_TRACKING_URI"), artifact_root=root),
    }
