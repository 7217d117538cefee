"""LRM checkpoints as MLflow 3 LoggedModels: a tiny LRM folder (``LRM.save_pretrained``) logged as a pyfunc model
to a sqlite store in tmp_path, registered, loaded back with ``mlflow.pyfunc.load_model("models:/...")``; aliases
(``@champion``) and ``models:/NAME/latest`` resolved by `vfusion3d audit` and `vfusion3d generate`."""

import os
import shutil

import mlflow
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from vfusion3d_core.cameras import default_source_camera
from vfusion3d_core.cli import main
from vfusion3d_core.data import ArtifactStore, Manifest, file_entries
from vfusion3d_core.lrm import LRM, get_preset
from vfusion3d_core.lrm.cli import registered_checkpoint
from vfusion3d_core.lrm.preprocess import prepare_image
from vfusion3d_pipeline.assets.evaluation import champion_checkpoint
from vfusion3d_pipeline.tracking import local_artifact_location, mlflow_run, model_id_of

NAME = "lrm_finetuned"


def commit_lrm(store: ArtifactStore, seed: int, asset: str = NAME):
    """A committed LRM asset version whose model/ folder is a seeded tiny LRM written by save_pretrained."""
    with store.staging(asset) as d:
        torch.manual_seed(seed)
        LRM(get_preset("tiny")).save_pretrained(d / "model")
        files = sorted(p.relative_to(d).as_posix() for p in (d / "model").rglob("*") if p.is_file())
        return store.commit(d, Manifest(asset, file_entries(d, files), {"steps": seed}, {}), asset)


def publish(uri: str, root, version, metrics: dict[str, float]) -> tuple[str, str]:
    """What the LRM assets do: log the model folder as a LoggedModel, link metrics to it, register it."""
    with mlflow_run(uri, "vfusion3d", version.manifest.asset, {}, local_artifact_location(uri, str(root))) as run:
        model_id = run.log_lrm_model(version.path / "model")
        run.log_metrics(metrics, model_id=model_id)
        return model_id, run.register_model(version.manifest.asset, model_id, version)


@pytest.fixture
def image(tmp_path):
    rgba = np.zeros((48, 40, 4), np.uint8)
    rgba[8:40, 6:34] = (200, 60, 30, 255)
    Image.fromarray(rgba).save(tmp_path / "object.png")
    return tmp_path / "object.png"


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """Two committed lrm_finetuned versions registered as versions 1 and 2 of a sqlite store under the root."""
    root = tmp_path / "artifacts"
    uri = f"sqlite:///{root}/mlflow.db"
    store = ArtifactStore(root)
    versions = [commit_lrm(store, 1), commit_lrm(store, 2)]
    published = [publish(uri, root, v, {"heldout_psnr": 10.0 + i}) for i, v in enumerate(versions)]
    monkeypatch.setenv("VFUSION3D_ARTIFACT_ROOT", str(root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlflow.set_tracking_uri(uri)
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # set_tracking_uri exports it; the CLI must find the store alone
    return root, uri, versions, published


def test_logged_model_loads_with_pyfunc_and_predicts_triplanes(registry, image) -> None:
    root, uri, versions, published = registry
    assert [p[1] for p in published] == [f"models:/{NAME}/1", f"models:/{NAME}/2"]
    client = mlflow.MlflowClient(uri)
    model_id = published[0][0]
    mv = client.get_model_version(NAME, "1")
    assert model_id_of(mv) == model_id and mv.tags["vfusion3d.digest"] == versions[0].digest
    logged = client.get_logged_model(model_id)
    assert logged.tags["vfusion3d.digest"] == versions[0].digest
    assert {m.key: m.value for m in logged.metrics} == {"heldout_psnr": 10.0}  # metrics linked to the model
    run = client.get_run(logged.source_run_id)
    assert [o.model_id for o in run.outputs.model_outputs] == [model_id]  # the model is the run's output
    assert logged.artifact_location.startswith((root / "mlflow-artifacts").resolve().as_uri())

    pyfunc = mlflow.pyfunc.load_model(f"models:/{NAME}/1")
    assert pyfunc.metadata.model_id == model_id and "python_function" in pyfunc.metadata.flavors
    loaded = pyfunc.unwrap_python_model().lrm
    saved = LRM.from_pretrained(versions[0].path / "model")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), saved.state_dict().values(),
                                                  strict=True))
    planes = pyfunc.predict([str(image), str(image)])
    prepared = prepare_image(image, saved.config.source_size, background="never").image[None]
    with torch.no_grad():
        expected = saved.eval().encode(prepared, default_source_camera()[None]).numpy()
    assert planes.dtype == np.float32 and planes.shape == (2, *expected.shape[1:])
    np.testing.assert_allclose(planes[0], expected[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(planes[0], planes[1])
    other = mlflow.pyfunc.load_model(f"models:/{NAME}/latest").predict([str(image)])  # version 2: other weights
    assert not np.allclose(other[0], planes[0])


def test_aliases_resolve_in_audit_and_generate(registry, image, tmp_path) -> None:
    root, uri, versions, published = registry
    store = ArtifactStore(root)
    rival = commit_lrm(store, 3, "lrm_3d_only")
    publish(uri, root, rival, {"heldout_psnr": 9.0})
    with mlflow_run(uri, "vfusion3d", "eval", {}) as run:
        run.set_alias("lrm_3d_only", 1, "champion")
        assert run.set_alias(NAME, 1, "champion", rivals=(NAME, "lrm_3d_only", "lrm_pretrained")) == \
            f"models:/{NAME}/1"
    client = mlflow.MlflowClient(uri)
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    assert client.get_registered_model("lrm_3d_only").aliases == {}  # one LRM model holds @champion
    assert client.get_run(run.run_id).data.tags["alias.champion"] == f"models:/{NAME}/1"
    assert mlflow.pyfunc.load_model(f"models:/{NAME}@champion").metadata.model_id == published[0][0]

    runner = CliRunner()
    for target, version in ((f"models:/{NAME}@champion", versions[0]), (f"models:/{NAME}/latest", versions[1]),
                            (f"models:/{NAME}/2", versions[1])):
        result = runner.invoke(main, ["audit", target, "--json"])
        assert result.exit_code == 0, result.output
        assert f'"digest": "{version.digest}"' in result.output
    missing = runner.invoke(main, ["audit", f"models:/{NAME}@nope"])
    assert missing.exit_code != 0 and f"models:/{NAME}@nope: not found" in missing.output

    # generate: the committed model/ folder when it is here, else the LoggedModel's copy
    assert registered_checkpoint(f"models:/{NAME}@champion") == versions[0].path / "model"
    out = runner.invoke(main, ["generate", str(image), "--checkpoint", f"models:/{NAME}@champion", "-o",
                               str(tmp_path / "out"), "--no-video", "--mesh-resolution", "8", "--device", "cpu"])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "out" / "object" / "input.png").is_file()
    shutil.rmtree(versions[1].path / "model")
    downloaded = registered_checkpoint(f"models:/{NAME}/latest")
    assert downloaded != versions[1].path / "model" and (downloaded / "config.json").is_file()
    torch.manual_seed(2)
    reference = LRM(get_preset("tiny"))
    assert all(torch.equal(a, b) for a, b in zip(LRM.from_pretrained(downloaded).state_dict().values(),
                                                  reference.state_dict().values(), strict=True))
    bad = runner.invoke(main, ["generate", str(image), "--checkpoint", f"models:/{NAME}@nope", "-o",
                               str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "not found" in bad.output


def test_champion_rule_lowest_lpips_then_highest_psnr() -> None:
    means = {"lrm_3d_only": {"lpips": 0.20, "psnr": 20.0}, "lrm_pretrained": {"lpips": 0.15, "psnr": 18.0},
             "lrm_finetuned": {"lpips": 0.15, "psnr": 19.0}}
    assert champion_checkpoint(means) == "lrm_finetuned"  # tie on LPIPS: the higher PSNR
    means["lrm_3d_only"]["lpips"] = 0.1
    assert champion_checkpoint(means) == "lrm_3d_only"


def test_artifact_location_follows_a_tracking_server(tmp_path) -> None:
    assert local_artifact_location(f"sqlite:///{tmp_path}/mlflow.db", str(tmp_path)) == \
        (tmp_path / "mlflow-artifacts").resolve().as_uri()
    assert local_artifact_location("postgresql://u@db/mlflow", str(tmp_path)).startswith("file://")
    for server in ("http://mlflow:5000", "https://mlflow.example.com", "databricks"):
        assert local_artifact_location(server, str(tmp_path)) is None
