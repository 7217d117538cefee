"""Materialize the whole asset graph, partitions included: the README's main command (`make tiny`).

A single Dagster run covers one partition, so the graph runs in three phases, each a real
`dagster asset materialize` against the instance in DAGSTER_HOME (so everything shows in the UI):

1. every unpartitioned asset that does not depend on a partitioned one (renders, prompts, video model);
2. every partitioned asset, once per registered prompt shard (synthesis, filtering);
3. everything else (the LRMs and what follows them), which reads all partitions.

    python -m vfusion3d_pipeline.run_all [--dry-run]
"""

import argparse
import subprocess
import sys
import time

import dagster as dg

from vfusion3d_pipeline.definitions import defs
from vfusion3d_pipeline.partitions import prompt_shards


def phases() -> tuple[list[str], list[str], list[str]]:
    """(before, partitioned, after) asset keys in topological order."""
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


def materialize(selection: list[str], partition: str | None = None) -> None:
    cmd = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "vfusion3d_pipeline.definitions",
           "--select", ",".join(selection)]
    if partition:
        cmd += ["--partition", partition]
    label = ",".join(selection) + (f" [{partition}]" if partition else "")
    print(f"[run_all] materializing {label}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise SystemExit(f"[run_all] FAILED: {label} (exit {proc.returncode})")
    print(f"[run_all] done {label} in {time.perf_counter() - start:.0f} s", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="print the phases and exit")
    args = parser.parse_args(argv)
    before, partitioned, after = phases()
    print(f"[run_all] phase 1: {before}\n[run_all] phase 2 (per prompt shard): {partitioned}\n"
          f"[run_all] phase 3: {after}", flush=True)
    if args.dry_run:
        return
    start = time.perf_counter()
    if before:
        materialize(before)
    if partitioned:
        keys = dg.DagsterInstance.get().get_dynamic_partitions(prompt_shards.name)
        if not keys:
            print("[run_all] no prompt shards registered; skipping the partitioned assets", flush=True)
        for key in keys:
            materialize(partitioned, key)
    if after:
        materialize(after)
    print(f"[run_all] whole graph materialized in {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
