"""Exposure (docs/reliability.md, "Exposure"): the UI binds to localhost, `vfusion3d label` serves nothing,
credentials come from the environment only and never reach manifests, MLflow params or logs; nothing unpickles
with code execution."""

from __future__ import annotations

import importlib.util
import json
import re
import socket
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from vfusion3d_core.data import ArtifactStore, Manifest, file_entries
from vfusion3d_core.redact import REDACTED, is_secret_key, redact, redact_text

REPO = Path(__file__).resolve().parents[2]
SECRET = "s3cr3t-Vfusion3D-0123456789"  # a credential value that must never be written anywhere
CODE = ("vfusion3d_core", "vfusion3d_pipeline")


def _sources(*folders: str, suffixes=(".py",)) -> list[Path]:
    return [p for f in folders for p in sorted((REPO / f).rglob("*")) if p.suffix in suffixes and p.is_file()]


def test_ui_binds_to_localhost_by_default() -> None:
    ui = re.search(r"^ui:.*\n((?:\t.*\n)+)", (REPO / "Makefile").read_text(), re.M)
    assert ui and "dagster dev" in ui.group(1) and "-h 127.0.0.1" in ui.group(1), ui
    # what `dagster dev` starts when no host is given (read from its source: importing it costs seconds)
    spec = importlib.util.find_spec("dagster_webserver.cli")
    source = Path(spec.origin).read_text()
    option = re.search(r'"--host",.*?default=([A-Za-z_"0-9.]+)', source, re.S)
    assert option, "no --host option found in dagster_webserver/cli.py"
    default = option.group(1)
    if not default.startswith('"'):  # a module constant
        default = re.search(rf"^{default}\s*=\s*(\S+)", source, re.M).group(1)
    assert default.strip('"') == "127.0.0.1", default
    for path in [REPO / "Makefile", REPO / "workspace.yaml", REPO / "dagster.yaml",
                 *_sources("scripts", suffixes=(".sh", ".py")), *_sources(*CODE)]:
        assert "0.0.0.0" not in path.read_text(), f"{path} binds to every interface"


def test_label_command_serves_nothing(tmp_path, monkeypatch) -> None:
    """`vfusion3d label` is a terminal review: it must work with listening sockets forbidden."""
    from vfusion3d_core.cli import main
    from vfusion3d_core.data import ShardWriter
    from vfusion3d_core.data.video_sample import SyntheticVideoSample

    def refuse(*args, **kwargs):
        raise AssertionError("vfusion3d label tried to open a listening socket")

    monkeypatch.setattr(socket.socket, "bind", refuse)
    monkeypatch.setattr(socket.socket, "listen", refuse)
    store = ArtifactStore(tmp_path / "root")
    with store.staging("synthetic_videos", "shard-000000") as d:
        with ShardWriter(d, 4) as w:
            frames = np.zeros((2, 8, 8, 3), np.uint8)
            w.write(SyntheticVideoSample("pa", "a \x1b[2J red cube", frames, 1, "ab" * 8, {}))
        files = [p.name for p in w.shards]
        store.commit(d, Manifest("synthetic_videos", file_entries(d, files), {}, {}), "synthetic_videos",
                     "shard-000000")
    result = CliRunner().invoke(main, ["label", "--artifacts", str(store.root), "--labels",
                                       str(tmp_path / "labels.csv")], input="g\n")
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output  # a hostile prompt is shown escaped, never as a terminal control sequence


def test_secret_keys_are_recognized() -> None:
    for key in ("AWS_SECRET_ACCESS_KEY", "aws_access_key_id", "GITHUB_TOKEN", "HF_TOKEN", "DB_PASSWORD",
                "mlflowTrackingPassword", "api_key", "OPENAI_API_KEY", "Authorization", "private_key_pem",
                "client_secret", "credentials"):
        assert is_secret_key(key), key
    for key in ("max_text_tokens", "shard_keys", "key", "num_tokens", "author", "tokenizer_path", "passes",
                "keep_checkpoints", "seed", "prompt"):
        assert not is_secret_key(key), key


def test_redaction_of_values() -> None:
    env = [SECRET]
    config = {"seed": 0, "aws_secret_access_key": SECRET, "nested": {"hf_token": "x" * 9, "steps": 3},
              "uri": "https://alice:pa55word@mlflow.example.com/api", "note": f"prefix {SECRET} suffix",
              "list": [{"password": "hunter22"}, "plain"], "empty_token": ""}
    out = redact(config, env)
    assert out["seed"] == 0 and out["nested"]["steps"] == 3 and out["list"][1] == "plain"
    assert out["aws_secret_access_key"] == out["nested"]["hf_token"] == out["list"][0]["password"] == REDACTED
    assert out["uri"] == f"https://alice:{REDACTED}@mlflow.example.com/api"
    assert out["note"] == f"prefix {REDACTED} suffix" and out["empty_token"] == ""
    assert redact_text("sqlite:////tmp/mlflow.db", env) == "sqlite:////tmp/mlflow.db"
    assert config["aws_secret_access_key"] == SECRET  # the caller's dict is not modified


@pytest.fixture
def secret_env(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET[::-1])
    return [SECRET, SECRET[::-1]]


def test_manifests_and_mlflow_params_hold_no_credentials(tmp_path, secret_env) -> None:
    """A materialization whose config carries credential-like keys, a URL with a password and the literal value
    of an environment secret writes none of them: not to manifest.json, LATEST.json or the MLflow store."""
    from vfusion3d_pipeline.tracking import MLflowRun

    root = tmp_path / "artifacts"
    config = {"seed": 1, "s3_secret_key": "abc-secret-key-123", "endpoint": f"https://bob:{SECRET}@s3.local",
              "copied_from_env": secret_env[1], "steps": 5}
    store = ArtifactStore(root)
    with store.staging("thing") as d:
        (d / "data.bin").write_bytes(b"payload")
        version = store.commit(d, Manifest("thing", file_entries(d, ["data.bin"]), {"n": 1}, config), "thing")
    assert version.manifest.config["seed"] == 1 and version.manifest.config["steps"] == 5

    class RecordingMlflow:  # stands in for the mlflow module: what MLflowRun hands to log_params is what gets stored
        def log_params(self, params: dict[str, str]) -> None:
            (root / "mlflow-params.json").write_text(json.dumps(params))

    MLflowRun(RecordingMlflow(), run=None).log_params(config)
    params = json.loads((root / "mlflow-params.json").read_text())
    assert params["seed"] == "1" and params["s3_secret_key"] == REDACTED and params["copied_from_env"] == REDACTED
    assert params["endpoint"] == f"https://bob:{REDACTED}@s3.local"
    written = b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())
    for needle in [*secret_env, "abc-secret-key-123"]:
        assert needle.encode() not in written, f"{needle} was written under the artifact root"


def test_audit_error_names_the_tracking_store_without_its_password(monkeypatch) -> None:
    """`vfusion3d audit models:/...` against an unreachable tracking server: the error names the store, with its
    password redacted (MLflow's own message repeats the URI)."""
    import click

    from vfusion3d_core.data.audit_cli import resolve_registered_model

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with pytest.raises(click.ClickException) as info:
        resolve_registered_model("models:/lrm_finetuned/1", f"http://alice:{SECRET}@127.0.0.1:9/")
    assert SECRET not in info.value.message
    assert f"http://alice:{REDACTED}@127.0.0.1:9" in info.value.message, info.value.message


def test_credentials_are_read_from_the_environment_only() -> None:
    """No credential is a config field or a literal in the code: resources read the environment at start-up."""
    pattern = re.compile(r"""(?i)(password|secret|token|api_key)\s*[:=]\s*["'][^"']{6,}["']""")
    for path in _sources(*CODE):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            assert not pattern.search(line), f"{path}:{n}: a literal credential? {line.strip()}"
    from vfusion3d_pipeline.resources import ArtifactStoreResource, MLflowResource, PresetResource

    for resource in (ArtifactStoreResource, MLflowResource, PresetResource):
        secret_fields = [f for f in resource.model_fields if is_secret_key(f)]
        assert not secret_fields, f"{resource.__name__} takes credentials as config: {secret_fields}"


def test_nothing_unpickles_with_code_execution() -> None:
    """torch.load always weights_only=True; no pickle / numpy allow_pickle / pandas read_pickle in the code;
    joblib (the quality models) only behind a manifest verification (see bad_input_cases ckpt-tampered-*)."""
    for path in _sources(*CODE):
        text = path.read_text()
        for n, line in enumerate(text.splitlines(), 1):
            code = line.split("#", 1)[0]
            if "torch.load(" in code:
                assert "weights_only=True" in code, f"{path}:{n}: {line.strip()}"
            assert "weights_only=False" not in code, f"{path}:{n}"
            assert not re.search(r"\bpickle\.loads?\(|allow_pickle=True|read_pickle\(|dill\.", code), f"{path}:{n}"
            if "joblib.load(" in code:
                assert path.name == "models.py", f"{path}:{n}: joblib.load outside QualityModels.load"


def test_no_shell_is_ever_used() -> None:
    """Prompts, labels and file names never reach a shell: no shell=True, os.system or os.popen anywhere."""
    for path in _sources(*CODE):
        code = path.read_text()
        assert not re.search(r"shell\s*=\s*True|os\.system\(|os\.popen\(|subprocess\.getoutput", code), path
