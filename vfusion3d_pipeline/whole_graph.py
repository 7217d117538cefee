"""Materialize the whole asset graph the way the Dagster UI does: the README's main command (`make tiny`).

Two asset backfills, launched through the webserver's GraphQL API (the API the UI itself calls):

1. ``source_objects`` and ``prompt_set``: they register the ``object_shards`` and ``prompt_shards`` dynamic
   partitions (a backfill targets the partitions that exist when it is launched, so the roots come first);
2. every asset of the graph (the ``experiments`` group excepted), all partitions: the backfill daemon runs them in
   dependency order, one run per partition of a partitioned asset, under the instance's ``gpu`` pool, run
   monitoring and run retries (dagster.yaml).

In the UI that is: *Materialize* on ``source_objects`` and ``prompt_set`` (or the job ``register_shards``), then
*Materialize all* on the asset graph with *All partitions*. Without ``--url`` a real ``dagster dev`` (webserver and
daemon) serves the instance in DAGSTER_HOME on 127.0.0.1 while the command runs (the UI shows the backfill live at
the printed address) and is stopped at the end. A re-run after a kill first waits for a whole-graph backfill still
in progress (the daemon resumes it) instead of launching a second one. Before anything runs, every pretrained folder
the preset needs is checked (``preflight``): at small / paper a run without weights fails in seconds.

    python -m vfusion3d_pipeline.whole_graph [--config RUN_CONFIG.json] [--url http://HOST:PORT] [--port N]
"""

import argparse
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vfusion3d_pipeline.asset_keys import PROMPT_SET, SOURCE_OBJECTS
from vfusion3d_pipeline.assets.ablation import GROUP as EXPERIMENTS  # its own job, never part of the graph
from vfusion3d_pipeline.preflight import missing_pretrained

ROOTS = (SOURCE_OBJECTS, PROMPT_SET)
TAG = "vfusion3d/whole_graph"
TERMINAL = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
POLL_S = 3.0

LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
    ... on PartitionSetNotFoundError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { stepKey invalidOutputName }
  }
}"""
BACKFILL = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      id status
      assetBackfillData { assetBackfillStatuses {
        __typename
        ... on AssetPartitionsStatusCounts { assetKey { path } numPartitionsTargeted numPartitionsMaterialized
                                             numPartitionsFailed numPartitionsInProgress }
        ... on UnpartitionedAssetStatus { assetKey { path } materialized failed inProgress }
      } }
    }
    ... on PythonError { message }
  }
}"""
IN_PROGRESS = """
query InProgress {
  partitionBackfillsOrError(status: REQUESTED) {
    ... on PartitionBackfills { results { id tags { key value } } }
    ... on PythonError { message }
  }
}"""
ASSETS = """
query Assets {
  assetNodes { assetKey { path } groupName isMaterializable }
}"""
LOCATIONS = """
query Locations {
  workspaceOrError {
    __typename
    ... on Workspace { locationEntries { name loadStatus locationOrLoadError {
      __typename ... on PythonError { message } } } }
    ... on PythonError { message }
  }
}"""


class GraphQLError(RuntimeError):
    """The webserver answered with an error (or not at all)."""


class DagsterGraphQL:
    """The webserver's GraphQL endpoint (``<url>/graphql``), the API the Dagster UI calls."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def __call__(self, query: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as answer:
                payload = json.loads(answer.read())
        except (OSError, ValueError) as exc:
            raise GraphQLError(f"no answer from {self.url}/graphql: {exc}") from exc
        if payload.get("errors"):
            raise GraphQLError(f"GraphQL errors from {self.url}: {payload['errors']}")
        return payload["data"]

    def wait_loaded(self, timeout_s: float = 300) -> None:
        """Until every code location is loaded; raises naming a location that failed to load."""
        deadline = time.monotonic() + timeout_s
        while True:
            workspace = self(LOCATIONS)["workspaceOrError"]
            if workspace["__typename"] != "Workspace":
                raise GraphQLError(f"workspace error: {workspace.get('message')}")
            entries = workspace["locationEntries"]
            for entry in entries:
                error = entry["locationOrLoadError"] or {}
                if error.get("__typename") == "PythonError":
                    raise GraphQLError(f"code location {entry['name']} failed to load:\n{error['message']}")
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                return
            if time.monotonic() > deadline:
                raise GraphQLError(f"code locations not loaded after {timeout_s:.0f} s: {entries}")
            time.sleep(1)

    def graph_assets(self) -> list[str]:
        """The materializable assets of the whole graph (``experiments`` excepted), as "a/b" paths."""
        nodes = self(ASSETS)["assetNodes"]
        return sorted("/".join(n["assetKey"]["path"]) for n in nodes
                      if n["isMaterializable"] and n["groupName"] != EXPERIMENTS)

    def launch_backfill(self, assets: list[str], title: str, run_config: dict | None = None) -> str:
        """An asset backfill of ``assets``, every partition (what *Materialize all* -> *All partitions* launches);
        returns its id."""
        params = {"assetSelection": [{"path": a.split("/")} for a in assets], "allPartitions": True,
                  "title": title, "tags": [{"key": TAG, "value": title}]}
        if run_config:
            params["runConfigData"] = run_config
        launched = self(LAUNCH, {"params": params})["launchPartitionBackfill"]
        if launched["__typename"] != "LaunchBackfillSuccess":
            raise GraphQLError(f"backfill of {assets} refused: {launched}")
        return launched["backfillId"]

    def in_progress(self, title: str) -> str | None:
        """The id of a whole-graph backfill named ``title`` still in progress (a killed earlier launch), if any."""
        found = self(IN_PROGRESS)["partitionBackfillsOrError"]
        for backfill in found.get("results", []):
            if {"key": TAG, "value": title} in backfill["tags"]:
                return backfill["id"]
        return None

    def wait_backfill(self, backfill_id: str, say=print) -> dict:
        """Until the backfill ends, saying each asset's progress when it changes; returns its last state."""
        seen = None
        while True:
            state = self(BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
            if state["__typename"] != "PartitionBackfill":
                raise GraphQLError(f"backfill {backfill_id}: {state}")
            progress = describe(state)
            if progress != seen:
                say(f"[whole_graph] backfill {backfill_id} {state['status']}: {progress}")
                seen = progress
            if state["status"] in TERMINAL:
                return state
            time.sleep(POLL_S)


def asset_progress(state: dict) -> dict[str, tuple[int, int, int]]:
    """asset -> (materialized, failed, targeted) partitions of a backfill state (an unpartitioned asset: 0/1)."""
    out = {}
    for s in (state.get("assetBackfillData") or {}).get("assetBackfillStatuses", []):
        name = "/".join(s["assetKey"]["path"])
        if s["__typename"] == "AssetPartitionsStatusCounts":
            out[name] = (s["numPartitionsMaterialized"], s["numPartitionsFailed"], s["numPartitionsTargeted"])
        else:
            out[name] = (int(s["materialized"]), int(s["failed"]), 1)
    return out


def describe(state: dict) -> str:
    return ", ".join(f"{a} {m}/{t}" + (f" ({f} failed)" if f else "")
                     for a, (m, f, t) in asset_progress(state).items())


def incomplete(state: dict) -> list[str]:
    """The assets a finished backfill did not fully materialize, with their counts."""
    return [f"{a}: {m}/{t} materialized, {f} failed" for a, (m, f, t) in asset_progress(state).items() if m < t]


def free_port(preferred: int = 0) -> int:
    """``preferred`` when nothing listens there on loopback, else (or for 0) a free port."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (a killed `make tiny` stops its dagster dev)."""
    with contextlib.suppress(OSError):  # not Linux: the server outlives a SIGKILLed parent (a clean exit stops it)
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop_group(server: subprocess.Popen, grace_s: float = 30) -> None:
    """Stop a server started in its own session: SIGTERM to its whole process group, SIGKILL after ``grace_s``."""
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def wait_previous_server(pid_file: Path, grace_s: float = 30) -> None:
    """The dagster dev of a killed earlier launch gets SIGTERM when its parent dies, but with a run in flight it was
    seen still running minutes later: give it ``grace_s``, then stop its whole process group ourselves (SIGTERM,
    SIGKILL after 60 s), so that two daemons never serve one instance."""
    from vfusion3d_core.data.files import pid_alive

    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return

    def wait(seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while pid_alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        return True

    for sig, seconds in ((None, grace_s), (signal.SIGTERM, 60.0), (signal.SIGKILL, 30.0)):
        if sig is not None:
            print(f"[whole_graph] stopping the dagster dev of an earlier launch (process group {pid})", flush=True)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)
        if wait(seconds):
            pid_file.unlink(missing_ok=True)
            return
    raise SystemExit(f"[whole_graph] the dagster dev of an earlier launch (pid {pid}) does not stop; stop it and "
                     "run again")


@contextmanager
def dagster_dev(port: int, log_path: Path, timeout_s: float = 300) -> Iterator[DagsterGraphQL]:
    """A real `dagster dev` (webserver + daemon) on 127.0.0.1:``port`` serving this code location and the instance
    in DAGSTER_HOME, output to ``log_path``; yields its GraphQL endpoint once every location is loaded, and stops
    the whole process group on exit."""
    cmd = [sys.executable, "-m", "dagster", "dev", "-m", "vfusion3d_pipeline.definitions", "-h", "127.0.0.1",
           "-p", str(port)]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pid_file = log_path.with_suffix(".pid")
    wait_previous_server(pid_file)
    with open(log_path, "w") as log:
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                  preexec_fn=_die_with_parent)
        pid_file.write_text(str(server.pid))
        try:
            client = DagsterGraphQL(f"http://127.0.0.1:{port}")
            deadline = time.monotonic() + timeout_s
            while True:  # the first answer of the webserver
                if server.poll() is not None:
                    raise GraphQLError(f"dagster dev exited ({server.returncode}); its log {log_path}:\n"
                                       + log_path.read_text()[-3000:])
                try:
                    client(LOCATIONS)
                    break
                except GraphQLError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            client.wait_loaded(max(1.0, deadline - time.monotonic()))
            yield client
        finally:
            stop_group(server, grace_s=60)
            pid_file.unlink(missing_ok=True)


def run_whole_graph(client: DagsterGraphQL, run_config: dict | None = None, say=print) -> dict[str, dict]:
    """The two backfills (roots, then everything, all partitions), each waited for; returns their final states.
    Raises SystemExit naming every asset a backfill left unmaterialized."""
    states = {}
    steps = [("register shards", list(ROOTS)), ("whole graph", client.graph_assets())]
    if client.in_progress("whole graph") is not None:  # a killed launch got that far: its roots are registered
        steps = steps[1:]
    for title, assets in steps:
        backfill = client.in_progress(title)
        if backfill is not None:
            say(f"[whole_graph] {title}: backfill {backfill} of an earlier launch is still in progress; waiting")
        else:
            backfill = client.launch_backfill(assets, title, run_config)
            say(f"[whole_graph] {title}: launched backfill {backfill} of {len(assets)} asset(s), all partitions; "
                f"watch it at {client.url}/runs/b/{backfill}")
        state = client.wait_backfill(backfill, say)
        missing = incomplete(state)
        if state["status"] not in ("COMPLETED", "COMPLETED_SUCCESS") or missing:
            raise SystemExit(f"[whole_graph] FAILED: {title} backfill {backfill} ended {state['status']}; "
                             + "; ".join(missing or ["(see its runs in the UI)"]))
        states[title] = state
    return states


def _answers(url: str) -> str | None:
    """``url`` when a Dagster webserver answers GraphQL there (e.g. `make ui`), else None."""
    try:
        DagsterGraphQL(url)(LOCATIONS)
    except GraphQLError:
        return None
    return url


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="run config JSON ({'ops': {asset: {'config': {...}}}}) of every run")
    parser.add_argument("--url", help="a running Dagster webserver of this instance (default: the one answering on "
                                      "127.0.0.1:PORT, e.g. `make ui`'s, else a dagster dev started for the duration)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 3000)),
                        help="where to look for a running webserver and to start dagster dev (a free port if taken; "
                             "0: always start one on a free port; default $PORT or 3000)")
    args = parser.parse_args(argv)
    run_config = json.loads(Path(args.config).read_text()) if args.config else None
    preset = os.environ.get("VFUSION3D_PRESET", "tiny")
    problems = missing_pretrained(preset, run_config)
    if problems:  # before any work: at small/paper renders_3d would render every object first
        raise SystemExit(f"[whole_graph] cannot start at preset {preset!r}:\n  " + "\n  ".join(problems))
    start = time.perf_counter()
    running = args.url or (args.port and _answers(f"http://127.0.0.1:{args.port}"))
    if running:  # never a second daemon on one instance: it would process the same backfill twice
        client = DagsterGraphQL(running)
        print(f"[whole_graph] using the Dagster webserver at {client.url}", flush=True)
        client.wait_loaded()
        run_whole_graph(client, run_config, lambda m: print(m, flush=True))
    else:
        home = Path(os.environ.get("DAGSTER_HOME", ".dagster_home"))
        log = home / "logs" / "whole_graph-dagster-dev.log"
        port = free_port(args.port)
        print(f"[whole_graph] starting dagster dev on http://127.0.0.1:{port} (log {log})", flush=True)
        with dagster_dev(port, log) as client:
            run_whole_graph(client, run_config, lambda m: print(m, flush=True))
    print(f"[whole_graph] whole graph materialized in {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
