"""Helpers for tests that run the real Dagster CLI / webserver in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vfusion3d_pipeline.whole_graph import free_port, stop_group  # noqa: F401 - free_port: the tests' import

REPO = Path(__file__).resolve().parents[1]
# source_objects at a micro size: 6 + 2 objects in two object_shards partitions of 4
MICRO_SOURCE = {"num_objects": 6, "num_heldout": 2, "objects_per_partition": 4}
# renders_3d at a micro size: 4 views at 32x32
MICRO_RENDERS = {"num_views": 4, "resolution": 32, "samples_per_shard": 4}
# run config ops of both (e.g. for the whole graph's --config)
MICRO_RENDER_OPS = {"source_objects": {"config": MICRO_SOURCE}, "renders_3d": {"config": MICRO_RENDERS}}
# video_model overrides: 16x16 frames, 4-frame orbits, a couple of steps per training stage (as tests/video)
VIDEO_MICRO = dict(resolution=16, num_frames=4, vae_channels=[8, 16], vae_norm_groups=4, vae_steps=2, image_steps=2,
                   video_steps=2, vae_batch=4, image_batch=4, video_batch=2, sample_steps=3, warmup_steps=1,
                   sample_batch=4, scheduler="euler")
# LRM training at a micro size: a few steps at 32 px
LRM_MICRO = {"steps": 4, "batch_size": 2, "overrides_json": json.dumps(
    {"views_per_sample": 2, "warmup_steps": 1, "stages": [{"start_step": 0, "render_size": 32}],
     "checkpoint_every": 2, "log_every": 2, "shuffle_buffer": 2})}


def materialize_renders(resources: dict, instance, source: dict | None = None, renders: dict | None = None,
                        checks: bool = False) -> list:
    """source_objects, then renders_3d for each object_shards partition it registered (in-process, as a user
    launching a backfill); returns the renders_3d results. ``checks`` also runs renders_3d_integrity."""
    import dagster as dg

    from vfusion3d_pipeline.assets.renders import renders_3d, source_objects
    from vfusion3d_pipeline.checks import renders_3d_integrity
    from vfusion3d_pipeline.partitions import object_shards

    listed = dg.materialize([source_objects], resources=resources, instance=instance,
                            run_config={"ops": {"source_objects": {"config": MICRO_SOURCE if source is None
                                                                   else source}}})
    assert listed.success
    results = []
    for key in instance.get_dynamic_partitions(object_shards.name):
        result = dg.materialize([renders_3d, *([renders_3d_integrity] if checks else [])], resources=resources,
                                instance=instance, partition_key=key,
                                run_config={"ops": {"renders_3d": {"config": MICRO_RENDERS if renders is None
                                                                   else renders}}})
        assert result.success, key
        results.append(result)
    return results


def materialize_renders_for(env: dict[str, str], source: dict | None = None, partitions: bool = True) -> None:
    """``materialize_renders`` in this process, into the DAGSTER_HOME instance and artifact root of a
    ``pipeline_env`` (what CLI runs started with ``env`` then see); ``partitions=False``: source_objects only."""
    import dagster as dg

    from vfusion3d_pipeline.assets.renders import source_objects
    from vfusion3d_pipeline.resources import ArtifactStoreResource, ComputeResource, MLflowResource, PresetResource

    root = env["VFUSION3D_ARTIFACT_ROOT"]
    res = {"artifacts": ArtifactStoreResource(root=root), "preset": PresetResource(name="tiny"),
           "mlflow": MLflowResource(artifact_root=root), "compute": ComputeResource(device="cpu", precision="fp32")}
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        if partitions:
            materialize_renders(res, instance, source)
        else:
            assert dg.materialize([source_objects], resources=res, instance=instance, run_config={
                "ops": {"source_objects": {"config": MICRO_SOURCE if source is None else source}}}).success


def hash_embed(texts: list[str]):
    """A deterministic stand-in for MiniLM (dedup only needs some embedding): unit vectors from sha512."""
    import hashlib

    import numpy as np

    rows = [np.frombuffer(hashlib.sha512(t.encode()).digest(), np.uint8).astype(np.float32) - 127.5 for t in texts]
    x = np.stack(rows) if rows else np.zeros((0, 64), np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)


def materialize_prompt_set(resources: dict, instance, config: dict, embed=None, raise_on_error: bool = True):
    """The real prompt_set asset in-process with ``config`` (its ops config). ``embed`` (texts -> unit vectors)
    stands in for MiniLM when given; the asset needs the ``artifacts`` and ``mlflow`` resources."""
    from contextlib import nullcontext
    from unittest import mock

    import dagster as dg

    from vfusion3d_pipeline.assets import prompts

    with mock.patch.object(prompts, "minilm_embedder", lambda: embed) if embed is not None else nullcontext():
        return dg.materialize([prompts.prompt_set], resources=resources, instance=instance,
                              run_config={"ops": {"prompt_set": {"config": config}}}, raise_on_error=raise_on_error)


def dagster_home(home: Path, instance_config: str = "dagster.yaml") -> Path:
    """``home`` made a DAGSTER_HOME holding one of the repo's instance configs as its dagster.yaml."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text((REPO / instance_config).read_text())
    return home


def pipeline_env(tmp_path: Path, name: str = "run") -> dict[str, str]:
    """Environment with its own DAGSTER_HOME (holding the repo's dagster.yaml) and artifact root."""
    home = dagster_home(tmp_path / f"{name}_dagster_home")
    env = dict(os.environ, DAGSTER_HOME=str(home), VFUSION3D_ARTIFACT_ROOT=str(tmp_path / f"{name}_artifacts"),
               VFUSION3D_PRESET="tiny", PYTHONUNBUFFERED="1", DAGSTER_DISABLE_TELEMETRY="1")
    env.pop("MLFLOW_TRACKING_URI", None)  # the store under this artifact root, not a caller's
    return env


def materialize_cmd(select: str, config: dict, partition: str | None = None) -> list[str]:
    """`dagster asset materialize` for a selection with run config (the CLI a user runs)."""
    return [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "vfusion3d_pipeline.definitions",
            "--select", select, "--config-json", json.dumps(config), *(["--partition", partition] if partition else [])]


def run_materialize(env: dict[str, str], select: str, config: dict, timeout: float = 300
                    ) -> subprocess.CompletedProcess:
    proc = subprocess.run(materialize_cmd(select, config), cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:  # the failing step's error, not just the executor's summary at the end
        lines = (proc.stdout + proc.stderr).splitlines()
        first = next((i for i, line in enumerate(lines) if "STEP_FAILURE" in line or "Traceback" in line), 0)
        raise AssertionError("\n".join(lines[first:first + 60]) + "\n...\n" + "\n".join(lines[-20:]))
    return proc


def run_whole_graph(env: dict[str, str], run_config: dict, tmp_path: Path, timeout: float = 1500
                    ) -> subprocess.CompletedProcess:
    """`make tiny`'s command (`python -m vfusion3d_pipeline.whole_graph`: a real dagster dev, the roots' backfill,
    then the whole-graph backfill through GraphQL) with ``run_config`` for every run; fails with its output and the
    dagster dev log unless it exits 0."""
    config = tmp_path / "whole_graph_config.json"
    config.write_text(json.dumps(run_config))
    proc = subprocess.run([sys.executable, "-m", "vfusion3d_pipeline.whole_graph", "--config", str(config),
                           "--port", "0"], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        log = Path(env["DAGSTER_HOME"], "logs", "whole_graph-dagster-dev.log")
        raise AssertionError(proc.stdout[-4000:] + proc.stderr[-4000:] + "\n--- dagster dev log ---\n"
                             + (log.read_text()[-8000:] if log.exists() else "(none)"))
    return proc


def latest_pointer(artifact_root: str | Path, asset: str) -> dict:
    return json.loads((Path(artifact_root) / asset / "LATEST.json").read_text())


def wait_for_http(url: str, server: subprocess.Popen, log_path: Path, timeout: float = 120) -> None:
    """Return at ``url``'s first HTTP answer (the event waited on); fail with the server's log if it exits or
    ``timeout`` passes first."""
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            assert server.poll() is None and time.time() < deadline, log_path.read_text()[-5000:]
            time.sleep(0.5)


@contextmanager
def serving(cmd: list[str], env: dict[str, str], log_path: Path, ready_url: str, timeout: float = 120
            ) -> Iterator[subprocess.Popen]:
    """A server process (its own process group, output to ``log_path``) yielded once ``ready_url`` answers; the
    whole group is stopped on exit (SIGTERM, then SIGKILL after 30 s)."""
    with open(log_path, "w") as log:
        server = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        try:
            wait_for_http(ready_url, server, log_path, timeout)
            yield server
        finally:
            stop_group(server)


@contextmanager
def dagster_dev(env: dict[str, str], log_path: Path, timeout: float = 120) -> Iterator[int]:
    """A real `dagster dev` (webserver + daemon) on a free loopback port; yields the port once it serves."""
    port = free_port()
    cmd = [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]
    with serving(cmd, env, log_path, f"http://127.0.0.1:{port}/server_info", timeout):
        yield port
