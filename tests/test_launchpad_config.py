"""The launchpad config of the code location: every field of every asset's config and of every resource has a
description, enum-like fields are closed choices, and the typed ``overrides`` mapping replaces JSON strings while
the deprecated ``*_json`` strings keep working."""

import dagster as dg
import pytest
from dagster._config import ConfigType, ConfigTypeKind

from vfusion3d_pipeline.definitions import defs
from vfusion3d_pipeline.gpu_steps import GpuStepsConfig, json_overrides


def _undocumented(config_type: ConfigType, path: str) -> list[str]:
    """Paths of the fields under ``config_type`` (recursively: nested models, optional and list types) without a
    description."""
    kind = config_type.kind
    if kind in (ConfigTypeKind.NONEABLE, ConfigTypeKind.ARRAY):
        return _undocumented(config_type.inner_type, path)
    if not ConfigTypeKind.has_fields(kind):
        return []
    missing = []
    for name, field in config_type.fields.items():
        if not (field.description or "").strip():
            missing.append(f"{path}.{name}")
        missing += _undocumented(field.config_type, f"{path}.{name}")
    return missing


def _asset_configs() -> dict[str, ConfigType]:
    out = {}
    for assets_def in defs.get_repository_def().asset_graph.assets_defs:
        if not assets_def.is_executable or assets_def.op.config_schema is None:
            continue
        out[assets_def.op.name] = assets_def.op.config_schema.config_type
    return out


def test_every_asset_config_field_has_a_description() -> None:
    configs = _asset_configs()
    assert {"renders_3d", "video_model", "lrm_pretrained", "eval_metrics", "prompt_set", "ablation_report"} <= set(
        configs)
    missing = [m for name, config_type in configs.items() for m in _undocumented(config_type, name)]
    assert not missing, f"config fields without a description: {missing}"


def test_every_resource_field_has_a_description() -> None:
    missing = []
    for name, resource in defs.resources.items():
        if isinstance(resource, dg.ConfigurableResource):
            schema = resource.to_config_schema().as_field().config_type
            missing += _undocumented(schema, name)
    assert not missing, f"resource fields without a description: {missing}"


@pytest.mark.parametrize("op, field, values", [
    ("video_model", "execution", {"in_process", "pipes"}),
    ("synthetic_videos", "scheduler", {"euler", "dpmpp"}),
    ("lrm_pretrained", "precision", {"auto", "bf16", "fp32"}),
    ("source_objects", "source", {"procedural", "folder", "listing"}),
])
def test_enum_like_fields_are_closed_choices(op: str, field: str, values: set[str]) -> None:
    config_type = _asset_configs()[op].fields[field].config_type
    if config_type.kind == ConfigTypeKind.NONEABLE:
        config_type = config_type.inner_type
    assert config_type.kind == ConfigTypeKind.ENUM
    assert {v.config_value for v in config_type.enum_values} == values


def test_a_bad_choice_fails_at_config_validation() -> None:
    """The launchpad refuses an unknown choice before a run starts (no asset code runs)."""
    job = defs.resolve_job_def("synthesize_prompt_shard")
    with pytest.raises(dg.DagsterInvalidConfigError, match="execution"):
        dg.validate_run_config(job, {"ops": {"synthetic_videos": {"config": {"execution": "gpu"}}}})


def test_typed_overrides_win_over_the_deprecated_json_string() -> None:
    assert json_overrides('{"lr": 0.1, "steps": 3}', {"lr": 0.2}) == {"lr": 0.2, "steps": 3}
    assert json_overrides("", {}) == {}
    with pytest.raises(dg.Failure, match="must be a JSON object"):
        json_overrides("[1]", {})
    steps = GpuStepsConfig(backend="k8s", base_pod_spec={"nodeSelector": {"gpu": "h100"}},
                           base_pod_spec_json='{"nodeSelector": {"gpu": "a100"}, "volumes": []}')
    assert steps.pod_spec() == {"nodeSelector": {"gpu": "h100"}, "volumes": []}
    assert GpuStepsConfig(ecs_run_task={"cluster": "c"}).run_task() == {"cluster": "c"}


def test_lrm_and_video_recipes_take_typed_overrides() -> None:
    from vfusion3d_pipeline.assets.lrm import LRMTrainAssetConfig
    from vfusion3d_pipeline.assets.video import VideoModelAssetConfig

    recipe = LRMTrainAssetConfig(overrides={"lr": 1e-5}, overrides_json='{"lr": 1.0, "warmup_steps": 3}').recipe(
        "tiny")
    assert recipe.lr == 1e-5 and recipe.warmup_steps == 3
    video = VideoModelAssetConfig(overrides={"checkpoint_every": 7}).to_core("tiny")
    assert video.checkpoint_every == 7
