"""Materialize the whole asset graph, partitions included: the README's main command (`make tiny`).

A Dagster run covers one partition, so the graph runs in stages, each a run of the code location's asset job
recorded in the instance under DAGSTER_HOME (so everything shows in `dagster dev`). Stages follow the
dependencies and alternate between unpartitioned assets (one run) and partitioned ones (one run per registered
partition). At the tiny preset:

1. source_objects, prompt_set (they register the object_shards and prompt_shards partitions);
2. renders_3d, once per object shard;
3. the video model, the quality models and the 3D-only LRM (they read every renders_3d partition);
4. synthetic_videos and filtered_multiview_dataset, once per prompt shard;
5. the LRMs trained on synthetic data and the evaluation, which read all partitions.

A partition already rendered for the same rows and settings is kept, so re-running after a kill redoes only the
unfinished partitions. Before the first stage every pretrained folder the preset needs is checked (``preflight``):
at small / paper a run without weights fails in seconds, naming each missing path.

Runs execute in this process (one import of torch & co. instead of one per run).

    python -m vfusion3d_pipeline.run_all [--dry-run] [--config RUN_CONFIG.json]
"""

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from vfusion3d_pipeline.assets.ablation import GROUP as EXPERIMENTS
from vfusion3d_pipeline.preflight import missing_pretrained
from vfusion3d_pipeline.recovery import recover_dead_runs
from vfusion3d_pipeline.resources import env_value


@dataclass(frozen=True)
class Stage:
    """Assets materialized together: one run, or one run per partition of ``partitions`` (a dynamic partitions
    definition's name) when set."""

    assets: tuple[str, ...]
    partitions: str | None = None

    def describe(self) -> str:
        return f"{list(self.assets)}" + (f" (per {self.partitions} partition)" if self.partitions else "")


def stages(defs: dg.Definitions | None = None) -> list[Stage]:
    """The asset keys in dependency order, grouped into stages: an asset joins the earliest stage after its
    parents' that has its own partitioning (a parent with the same partitioning may share the stage). Experiments
    (group ``experiments``) are left out: they have their own jobs."""
    if defs is None:
        from vfusion3d_pipeline.definitions import defs
    graph = defs.resolve_asset_graph()
    order = [k for k in graph.toposorted_asset_keys
             if graph.get(k).is_materializable and graph.get(k).group_name != EXPERIMENTS]
    kinds: list[str | None] = []  # partitions name of each stage
    members: list[list[dg.AssetKey]] = []
    stage_of: dict[dg.AssetKey, int] = {}
    for key in order:
        pdef = graph.get(key).partitions_def
        kind = getattr(pdef, "name", None) if pdef is not None else None
        lowest = 0
        for parent in graph.get(key).parent_keys & stage_of.keys():
            p = stage_of[parent]
            lowest = max(lowest, p if kinds[p] == kind else p + 1)
        index = next((i for i in range(lowest, len(kinds)) if kinds[i] == kind), len(kinds))
        if index == len(kinds):
            kinds.append(kind)
            members.append([])
        members[index].append(key)
        stage_of[key] = index
    return [Stage(tuple(k.to_user_string() for k in m), kind) for kind, m in zip(kinds, members, strict=True)]


# Progress at INFO (the in-process default logs every Dagster event at DEBUG).
QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def materialize(defs: dg.Definitions, instance: dg.DagsterInstance, selection: list[str],
                partition: str | None = None, run_config: dict | None = None) -> dg.ExecuteInProcessResult:
    """One run of the asset job for ``selection`` (and their checks); raises SystemExit naming what failed."""
    ops = {k: v for k, v in (run_config or {}).get("ops", {}).items() if k in selection}
    label = ",".join(selection) + (f" [{partition}]" if partition else "")
    print(f"[run_all] materializing {label}", flush=True)
    start = time.perf_counter()
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey(s) for s in selection],
                                    partition_key=partition, run_config={"ops": ops, **QUIET}, raise_on_error=False,
                                    tags={"vfusion3d/run_all": "1"})
    if not result.success:
        failed = [e.step_key for e in result.all_events if e.is_step_failure]
        raise SystemExit(f"[run_all] FAILED: {label} (run {result.run_id}; failed steps {failed})")
    print(f"[run_all] done {label} in {time.perf_counter() - start:.0f} s (run {result.run_id})", flush=True)
    return result


def run_graph(defs: dg.Definitions, instance: dg.DagsterInstance, run_config: dict | None = None) -> list[str]:
    """Materialize every asset (each registered partition of partitioned ones); returns the run ids."""
    preset = env_value(defs.resources["preset"].name) if "preset" in defs.resources else "tiny"
    problems = missing_pretrained(preset, run_config)
    if problems:  # before any work: at small/paper renders_3d would render every object first
        raise SystemExit(f"[run_all] cannot start at preset {preset!r}:\n  " + "\n  ".join(problems))
    plan = stages(defs)
    for i, stage in enumerate(plan, 1):
        print(f"[run_all] stage {i}: {stage.describe()}", flush=True)
    runs = []
    for i, stage in enumerate(plan, 1):
        if stage.partitions is None:
            runs.append(materialize(defs, instance, list(stage.assets), run_config=run_config).run_id)
            continue
        keys = instance.get_dynamic_partitions(stage.partitions)
        if not keys:
            print(f"[run_all] stage {i}: no {stage.partitions} partition registered; skipping {stage.assets}",
                  flush=True)
        for j, key in enumerate(keys, 1):
            print(f"[run_all] stage {i}: partition {j}/{len(keys)}", flush=True)
            runs.append(materialize(defs, instance, list(stage.assets), key, run_config).run_id)
    return runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="print the stages and exit")
    parser.add_argument("--config", help="run config JSON ({'ops': {asset: {'config': {...}}}}) for every stage")
    args = parser.parse_args(argv)
    from vfusion3d_pipeline.definitions import defs

    if args.dry_run:
        for i, stage in enumerate(stages(defs), 1):
            print(f"[run_all] stage {i}: {stage.describe()}", flush=True)
        return
    run_config = json.loads(Path(args.config).read_text()) if args.config else None
    start = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        recovered = recover_dead_runs(instance, defs.resources["mlflow"].uri())
        if any(recovered.values()):
            print(f"[run_all] recovered from killed runs: {recovered}", flush=True)
        run_graph(defs, instance, run_config)
    print(f"[run_all] whole graph materialized in {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
