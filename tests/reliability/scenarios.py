"""Fault-injection scenarios of the core atomic writers (shared by the pytest tests and the runner).

Each scenario runs a workload once uninterrupted (the reference, also the calibration), then kills the same
workload on a second directory at ``n`` random points (``faults.kill_at_random_points``), checking after
every kill what must hold at any instant, and finally compares the re-run result with the reference:

- shards:     ShardWriter; visible shards are always complete and byte-identical to the reference's; at the
              end every sample is there exactly once and no temporary is left.
- commit:     ArtifactStore staging -> manifest -> rename -> LATEST.json, two versions; LATEST always names
              a complete, verified version; at the end the manifest digests equal the reference's.
- checkpoint: LRM training with a checkpoint every step; every visible checkpoint loads and is finite; the
              resumed run ends with the reference's parameters (within 1e-5).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from faults import FaultReport, Kill, calibrate, kill_at_random_points, python_cmd

HIDDEN_OK = (".staging", ".commit.lock")  # the commit lock file persists by design


def _fail_final(report: FaultReport, problem: str) -> None:
    report.failures.append(f"final: {problem}")
    report.final_ok = False


# --- ShardWriter ------------------------------------------------------------------------------------------
def shard_writer_scenario(tmp: Path, n: int, seed: int = 0, samples: int = 40, per_shard: int = 4,
                          size: int = 32) -> FaultReport:
    from workloads import sample_keys

    from vfusion3d_core.data import iter_samples

    ref, work = tmp / "ref", tmp / "work"

    def cmd(d: Path) -> list[str]:
        return python_cmd("shards", str(d), "--samples", str(samples), "--per-shard", str(per_shard),
                          "--seed", str(seed), "--size", str(size))

    cal = calibrate(cmd(ref))
    expected = {p.name: p.read_bytes() for p in sorted(ref.glob("shard-*.tar"))}
    assert len(expected) == -(-samples // per_shard), sorted(expected)

    def check(kill: Kill) -> None:
        for p in sorted(work.glob("shard-*.tar")) if work.is_dir() else []:
            assert p.name in expected, f"unexpected visible shard {p.name}"
            assert p.read_bytes() == expected[p.name], f"visible shard {p.name} is partial or differs"

    report = kill_at_random_points(cmd(work), n, calibration=cal, seed=seed, check=check)
    if report.final_ok:
        visible = {p.name: p.read_bytes() for p in sorted(work.glob("shard-*.tar"))}
        if visible != expected:
            _fail_final(report, "final shards differ from the uninterrupted run's")
        leftovers = sorted(p.name for p in work.iterdir() if p.name.startswith("."))
        if leftovers:
            _fail_final(report, f"temporaries left after a successful re-run: {leftovers}")
        keys = [s.key for s in iter_samples(sorted(work.glob("shard-*.tar")))]
        if keys != sample_keys(samples, seed):
            _fail_final(report, f"samples missing or duplicated: {len(keys)} read, {len(set(keys))} distinct")
    return report


# --- ArtifactStore commit ---------------------------------------------------------------------------------
def _versions(root: Path) -> dict[str, str]:
    from vfusion3d_core.data import Manifest

    base = root / "faulty" / "versions"
    return {d.name: Manifest.read(d / "manifest.json").digest for d in sorted(base.iterdir())} if base.is_dir() else {}


def artifact_commit_scenario(tmp: Path, n: int, seed: int = 0, samples: int = 12) -> FaultReport:
    from vfusion3d_core.data import ArtifactStore, Manifest

    ref, work = tmp / "ref", tmp / "work"
    seeds = [str(seed), str(seed + 1)]

    def cmd(root: Path) -> list[str]:
        return python_cmd("commit", str(root), "--seeds", *seeds, "--samples", str(samples))

    cal = calibrate(cmd(ref))
    ref_versions = _versions(ref)
    ref_latest = ArtifactStore(ref).latest("faulty").digest
    assert len(ref_versions) == 2 and ref_latest in ref_versions.values()

    def check(kill: Kill) -> None:
        store = ArtifactStore(work)
        base = store.asset_dir("faulty")
        for name in sorted((base / "versions").iterdir()) if (base / "versions").is_dir() else []:
            assert name.name in ref_versions, f"unexpected version directory {name.name}"
            manifest = Manifest.read(name / "manifest.json")  # refuses a partial / edited manifest
            assert manifest.digest == ref_versions[name.name], f"{name.name}: digest differs from the reference"
            assert manifest.verify(name) == [], f"{name.name}: files do not match the manifest"
        if (base / "LATEST.json").exists():
            json.loads((base / "LATEST.json").read_text())  # never a half-written pointer
            latest = store.latest("faulty")
            assert latest is not None and latest.digest in ref_versions.values()
            assert latest.manifest.verify(latest.path) == []
        visible = sorted(p.name for p in base.iterdir() if not p.name.startswith(".")) if base.is_dir() else []
        assert set(visible) <= {"versions", "LATEST.json"}, f"unexpected visible entries {visible}"

    report = kill_at_random_points(cmd(work), n, calibration=cal, seed=seed, check=check)
    if report.final_ok:
        store = ArtifactStore(work)
        if _versions(work) != ref_versions:
            _fail_final(report, f"versions {_versions(work)} != reference {ref_versions}")
        latest = store.latest("faulty")
        if latest is None or latest.digest != ref_latest:
            _fail_final(report, "LATEST does not point at the reference's last version")
        staging = store.asset_dir("faulty") / ".staging"
        if staging.is_dir() and any(staging.iterdir()):
            _fail_final(report, f"staging directories left: {sorted(p.name for p in staging.iterdir())}")
        hidden = sorted(p.name for p in store.asset_dir("faulty").iterdir()
                        if p.name.startswith(".") and p.name not in HIDDEN_OK)
        if hidden:
            _fail_final(report, f"hidden temporaries left: {hidden}")
    return report


# --- LRM training checkpoints -----------------------------------------------------------------------------
def make_training_shards(directory: Path, seed: int = 0) -> list[str]:
    from workloads import write_shards

    return [str(p) for p in write_shards(directory, 8, 4, seed + 7)]


def checkpoint_scenario(tmp: Path, n: int, seed: int = 0, steps: int = 8, mode: str = "mixed") -> FaultReport:
    import torch

    from vfusion3d_core.lrm.checkpoint import read_checkpoint
    from vfusion3d_core.lrm.train.checkpoint import list_checkpoints, load_training_state

    shards = make_training_shards(tmp / "data", seed)
    ref, work = tmp / "ref", tmp / "work"

    def cmd(out: Path) -> list[str]:
        return python_cmd("train", str(out), "--steps", str(steps), "--shards", *shards)

    cal = calibrate(cmd(ref))
    ref_ckpt = list_checkpoints(ref)[-1]
    _, ref_weights = read_checkpoint(ref_ckpt)
    ref_state = load_training_state(ref_ckpt)
    assert ref_ckpt.name == f"step-{steps:08d}"

    def check(kill: Kill) -> None:
        for ckpt in list_checkpoints(work):
            _, weights = read_checkpoint(ckpt)  # complete: loads without error
            state = load_training_state(ckpt)
            assert ckpt.name == f"step-{int(state['step']):08d}", f"{ckpt.name} holds step {state['step']}"
            assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())
        visible = sorted(p.name for p in (work / "checkpoints").iterdir() if not p.name.startswith(".")) \
            if (work / "checkpoints").is_dir() else []
        assert all(name.startswith("step-") for name in visible), visible

    def reset() -> None:  # a finished run: start the next attempt from scratch so its kill lands in training
        shutil.rmtree(work, ignore_errors=True)

    report = kill_at_random_points(cmd(work), n, calibration=cal, seed=seed, check=check, on_complete=reset,
                                   event_fraction=0.5, mode=mode)
    if report.final_ok:
        ckpts = list_checkpoints(work)
        if not ckpts or ckpts[-1].name != ref_ckpt.name:
            _fail_final(report, f"last checkpoint {[p.name for p in ckpts]} != {ref_ckpt.name}")
            return report
        _, weights = read_checkpoint(ckpts[-1])
        state = load_training_state(ckpts[-1])
        if state["batches"] != ref_state["batches"]:
            _fail_final(report, f"data position {state['batches']} != reference {ref_state['batches']}")
        worst = max(float((weights[k] - ref_weights[k]).abs().max()) for k in ref_weights)
        if worst > 1e-5:
            _fail_final(report, f"resumed parameters differ from the uninterrupted run's by {worst:.3g}")
        hidden = sorted(p.name for p in (work / "checkpoints").iterdir() if p.name.startswith("."))
        if hidden:
            _fail_final(report, f"hidden temporaries left: {hidden}")
    return report


SCENARIOS = {"shards": shard_writer_scenario, "commit": artifact_commit_scenario, "checkpoint": checkpoint_scenario}
