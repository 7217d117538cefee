"""The code location loads without the ML stack: heavy modules (torch, diffusers, transformers, mlflow; trimesh) are
imported inside the asset and check functions that need them, so `dagster dev`, the daemon and every run worker
load the definitions quickly. Asserts what is imported (in a fresh interpreter), never timings."""

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "diffusers", "transformers", "mlflow", "trimesh")
LIGHT_MODULES = (
    "vfusion3d_pipeline.resources",
    "vfusion3d_pipeline.gpu_steps",
    "vfusion3d_pipeline.publish",
    "vfusion3d_pipeline.recovery",
    "vfusion3d_pipeline.sensors",
    "vfusion3d_pipeline.automation",
    "vfusion3d_pipeline.whole_graph",
    "vfusion3d_pipeline.checks",
    "vfusion3d_pipeline.assets.renders",
    "vfusion3d_pipeline.assets.prompts",
    "vfusion3d_pipeline.assets.filtering",
    "vfusion3d_pipeline.assets.video",
    "vfusion3d_pipeline.assets.ablation",
    "vfusion3d_pipeline.assets.lrm",
    "vfusion3d_pipeline.assets.evaluation",
    "vfusion3d_core.compute",
    "vfusion3d_core.code_versions",
    "vfusion3d_core.thresholds",
)


def heavy_modules_after_import(module: str) -> list[str]:
    code = (f"import json, sys, {module}\n"
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_module_imports_no_ml_stack(module: str) -> None:
    assert heavy_modules_after_import(module) == []


def test_definitions_load_without_the_ml_stack() -> None:
    assert heavy_modules_after_import("vfusion3d_pipeline.definitions") == []


def test_light_constants_are_re_exported() -> None:
    """A constant the code location reads from a light module is the one its computing module uses."""
    from vfusion3d_core import thresholds
    from vfusion3d_core.metrics import leakage

    assert leakage.NEAR_DUP_THRESHOLD is thresholds.NEAR_DUP_THRESHOLD


def test_code_versions_are_the_steps_own() -> None:
    """The light constants the code location reads are the ones the steps write into their manifests."""
    from vfusion3d_core import code_versions
    from vfusion3d_core.filtering.extract import CODE_VERSION as FILTERED
    from vfusion3d_core.prompts.promptset import CODE_VERSION as PROMPTS
    from vfusion3d_core.render.dataset import CODE_VERSION as RENDERS
    from vfusion3d_core.video.finetune import CODE_VERSION as VIDEO
    from vfusion3d_core.video.synthesis import CODE_VERSION as SYNTH

    assert (RENDERS, PROMPTS, VIDEO, SYNTH, FILTERED) == (
        code_versions.RENDERS_3D, code_versions.PROMPT_SET, code_versions.VIDEO_MODEL,
        code_versions.SYNTHETIC_VIDEOS, code_versions.FILTERED_MULTIVIEW)
