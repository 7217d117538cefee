"""Helpers for tests that run the real Dagster CLI / webserver in subprocesses."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# renders_3d at a micro size: 6 + 2 objects, 4 views at 32x32
MICRO_RENDERS = {"num_objects": 6, "num_heldout": 2, "num_views": 4, "resolution": 32, "samples_per_shard": 4}
# video_model overrides: 16x16 frames, 4-frame orbits, a couple of steps per training stage (as tests/video)
VIDEO_MICRO = dict(resolution=16, num_frames=4, vae_channels=[8, 16], vae_norm_groups=4, vae_steps=2, image_steps=2,
                   video_steps=2, vae_batch=4, image_batch=4, video_batch=2, sample_steps=3, warmup_steps=1,
                   sample_batch=4, scheduler="euler")
# LRM training at a micro size: a few steps at 32 px
LRM_MICRO = {"steps": 4, "batch_size": 2, "overrides_json": json.dumps(
    {"views_per_sample": 2, "warmup_steps": 1, "stages": [{"start_step": 0, "render_size": 32}],
     "checkpoint_every": 2, "log_every": 2, "shuffle_buffer": 2})}


def pipeline_env(tmp_path: Path, name: str = "run") -> dict[str, str]:
    """Environment with its own DAGSTER_HOME (holding the repo's dagster.yaml) and artifact root."""
    home = tmp_path / f"{name}_dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    env = dict(os.environ, DAGSTER_HOME=str(home), VFUSION3D_ARTIFACT_ROOT=str(tmp_path / f"{name}_artifacts"),
               VFUSION3D_PRESET="tiny", PYTHONUNBUFFERED="1", DAGSTER_DISABLE_TELEMETRY="1")
    return env


def materialize_cmd(select: str, config: dict) -> list[str]:
    """`dagster asset materialize` for a selection with run config (the CLI a user runs)."""
    return [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "vfusion3d_pipeline.definitions",
            "--select", select, "--config-json", json.dumps(config)]


def run_materialize(env: dict[str, str], select: str, config: dict, timeout: float = 300
                    ) -> subprocess.CompletedProcess:
    proc = subprocess.run(materialize_cmd(select, config), cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def latest_pointer(artifact_root: str | Path, asset: str) -> dict:
    return json.loads((Path(artifact_root) / asset / "LATEST.json").read_text())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
