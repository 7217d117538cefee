"""default_resources reads the environment through dg.EnvVar: a set variable is resolved when the resource is
initialized for a run (the launchpad shows its name, never its value), an unset one keeps the default."""

import dagster as dg
import pytest

from vfusion3d_pipeline.resources import DEFAULT_ARTIFACT_ROOT, default_resources, env_value

VARS = ("VFUSION3D_ARTIFACT_ROOT", "VFUSION3D_S3_BUCKET", "VFUSION3D_S3_PREFIX", "VFUSION3D_S3_ENDPOINT_URL",
        "VFUSION3D_S3_REGION", "VFUSION3D_PRESET", "VFUSION3D_GPU_STEPS", "VFUSION3D_DEVICE", "VFUSION3D_PRECISION",
        "MLFLOW_TRACKING_URI")


@pytest.fixture
def clean_env(monkeypatch):
    for name in VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _initialized(resource):
    return resource.process_config_and_initialize()


def test_no_environment_gives_the_defaults(clean_env) -> None:
    res = default_resources()
    artifacts, preset, compute, mlflow = (_initialized(res[k]) for k in ("artifacts", "preset", "compute", "mlflow"))
    assert (artifacts.root, artifacts.s3_bucket, artifacts.s3_prefix) == (DEFAULT_ARTIFACT_ROOT, None, "")
    assert (preset.name, preset.gpu_steps.backend) == ("tiny", "subprocess")
    assert (compute.device, compute.precision) == ("auto", "auto")
    assert mlflow.tracking_uri is None and mlflow.uri() == res["mlflow"].uri()
    assert not any(isinstance(getattr(r, f), dg.EnvVar) for r in res.values() for f in type(r).model_fields)


def test_set_variables_are_env_vars_resolved_at_initialization(clean_env, tmp_path) -> None:
    clean_env.setenv("VFUSION3D_ARTIFACT_ROOT", str(tmp_path / "a"))
    clean_env.setenv("VFUSION3D_PRESET", "small")
    clean_env.setenv("VFUSION3D_DEVICE", "cpu")
    clean_env.setenv("MLFLOW_TRACKING_URI", "sqlite:///first.db")
    clean_env.setenv("VFUSION3D_S3_BUCKET", "bucket")
    clean_env.setenv("VFUSION3D_GPU_STEPS", "k8s")
    res = default_resources()
    # the definitions hold the variables' names (what the launchpad shows), not their values
    assert res["preset"].name == dg.EnvVar("VFUSION3D_PRESET")
    assert res["mlflow"].tracking_uri == dg.EnvVar("MLFLOW_TRACKING_URI")
    assert isinstance(res["artifacts"].root, dg.EnvVar) and res["compute"].precision == "auto"
    # the value is read when a run initializes the resource: the run worker's environment, not the loader's
    clean_env.setenv("MLFLOW_TRACKING_URI", "sqlite:///second.db")
    assert _initialized(res["mlflow"]).uri() == "sqlite:///second.db"
    assert _initialized(res["preset"]).name == "small" and _initialized(res["compute"]).device == "cpu"
    artifacts = _initialized(res["artifacts"])
    assert (artifacts.root, artifacts.s3_bucket) == (str(tmp_path / "a"), "bucket")
    assert res["preset"].gpu_steps.backend == "k8s"  # a closed choice: read at load (an EnvVar cannot fill it)
    # code outside a run (the recovery sensor) reads them through env_value
    assert res["mlflow"].uri() == "sqlite:///second.db" and env_value(res["preset"].name) == "small"


def test_an_empty_variable_counts_as_unset(clean_env) -> None:
    clean_env.setenv("VFUSION3D_S3_BUCKET", "")
    clean_env.setenv("VFUSION3D_PRESET", "")
    res = default_resources()
    assert res["artifacts"].s3_bucket is None and res["preset"].name == "tiny"


def test_definitions_with_env_resources_run_an_asset(clean_env, tmp_path) -> None:
    """A materialization resolves the EnvVars: source_objects writes under the variable's artifact root."""
    from vfusion3d_pipeline.assets.renders import source_objects

    clean_env.setenv("VFUSION3D_ARTIFACT_ROOT", str(tmp_path / "root"))
    res = default_resources()
    clean_env.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    res["mlflow"] = default_resources()["mlflow"]
    with dg.instance_for_test() as instance:
        config = {"num_objects": 2, "num_heldout": 1}
        result = dg.materialize([source_objects], resources=res, instance=instance,
                                run_config={"ops": {"source_objects": {"config": config}}})
    assert result.success
    assert (tmp_path / "root" / "source_objects").is_dir()
