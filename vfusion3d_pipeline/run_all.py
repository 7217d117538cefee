"""Materialize the whole asset graph, partitions included: the README's main command (`make tiny`).

A Dagster run covers one partition, so the graph runs in three phases, each a run of the code location's
asset job recorded in the instance under DAGSTER_HOME (so everything shows in `dagster dev`):

1. every unpartitioned asset that does not depend on a partitioned one (renders, prompts, video model, ...);
2. every partitioned asset, once per registered prompt shard (synthesis, filtering);
3. everything else (the LRMs trained on synthetic data and the evaluation), which reads all partitions.

Before phase 1 every pretrained folder the preset needs is checked (``preflight``): at small / paper a run
without weights fails in seconds, naming each missing path.

Runs execute in this process (one import of torch & co. instead of one per run).

    python -m vfusion3d_pipeline.run_all [--dry-run] [--config RUN_CONFIG.json]
"""

import argparse
import json
import time
from pathlib import Path

import dagster as dg

from vfusion3d_pipeline.partitions import prompt_shards
from vfusion3d_pipeline.preflight import missing_pretrained
from vfusion3d_pipeline.recovery import recover_dead_runs


def phases(defs: dg.Definitions | None = None) -> tuple[list[str], list[str], list[str]]:
    """(before, partitioned, after) asset keys in topological order."""
    if defs is None:
        from vfusion3d_pipeline.definitions import defs
    graph = defs.resolve_asset_graph()
    order = [k for k in graph.toposorted_asset_keys if graph.get(k).is_materializable]
    partitioned = {k for k in order if graph.get(k).partitions_def is not None}
    downstream_of_partitioned = set()
    for key in order:
        parents = graph.get(key).parent_keys
        if parents & (partitioned | downstream_of_partitioned) and key not in partitioned:
            downstream_of_partitioned.add(key)
    before = [k for k in order if k not in partitioned and k not in downstream_of_partitioned]
    names = lambda keys: [k.to_user_string() for k in order if k in keys]  # noqa: E731
    return names(set(before)), names(partitioned), names(downstream_of_partitioned)


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
    """Materialize every asset (each registered prompt shard for partitioned ones); returns the run ids."""
    preset = defs.resources["preset"].name if "preset" in defs.resources else "tiny"
    problems = missing_pretrained(preset, run_config)
    if problems:  # before any work: at small/paper renders_3d would render every object first
        raise SystemExit(f"[run_all] cannot start at preset {preset!r}:\n  " + "\n  ".join(problems))
    before, partitioned, after = phases(defs)
    print(f"[run_all] phase 1: {before}\n[run_all] phase 2 (per prompt shard): {partitioned}\n"
          f"[run_all] phase 3: {after}", flush=True)
    runs = []
    if before:
        runs.append(materialize(defs, instance, before, run_config=run_config).run_id)
    if partitioned:
        keys = instance.get_dynamic_partitions(prompt_shards.name)
        if not keys:
            print("[run_all] no prompt shards registered; skipping the partitioned assets", flush=True)
        for i, key in enumerate(keys, 1):
            print(f"[run_all] partition {i}/{len(keys)}", flush=True)
            runs.append(materialize(defs, instance, partitioned, key, run_config).run_id)
    if after:
        runs.append(materialize(defs, instance, after, run_config=run_config).run_id)
    return runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="print the phases and exit")
    parser.add_argument("--config", help="run config JSON ({'ops': {asset: {'config': {...}}}}) for every phase")
    args = parser.parse_args(argv)
    from vfusion3d_pipeline.definitions import defs

    if args.dry_run:
        before, partitioned, after = phases(defs)
        print(f"[run_all] phase 1: {before}\n[run_all] phase 2 (per prompt shard): {partitioned}\n"
              f"[run_all] phase 3: {after}", flush=True)
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
