"""The full reliability run: ``python -m tests.reliability`` (or ``bash tests/reliability/run``).

Kills the core atomic writers (ShardWriter, ArtifactStore commit, LRM training checkpoints) at many random
points, kills `dagster asset materialize` of every asset of the graph at a micro size (pipeline_faults.py),
and feeds every bad-input case to its consumer, then prints the figures:

    faults injected N / recovered N / failures 0
    pipeline faults injected N / recovered N / failures 0
    bad inputs tried N / handled N

``--only faults | pipeline | bad-inputs`` runs one part (the pipeline part is by far the longest: every
kill is a CLI start-up; ``--assets renders_3d lrm_3d_only`` narrows it).

Exit status 1 when anything failed. ``pytest -q tests/reliability`` runs a reduced set of the same code.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE.parent), str(HERE)]

import figures  # noqa: E402
from bad_input_cases import CASES, run_case  # noqa: E402
from pipeline_faults import STEPS, run_pipeline_faults  # noqa: E402
from scenarios import SCENARIOS  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=10, help="kills per scenario (checkpoint: half as many)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["faults", "pipeline", "bad-inputs"], help="run one part")
    parser.add_argument("--pipeline-kills", type=int, default=4, help="kills per asset of the graph")
    parser.add_argument("--assets", nargs="+", choices=sorted({s.asset for s in STEPS}), default=None,
                        help="pipeline part: kill only these assets (their upstream is built without kills)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every kill point")
    args = parser.parse_args(argv)
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="vfusion3d-reliability-") as tmp:
        if args.only in (None, "faults"):
            kills = {"shards": args.kills, "commit": args.kills, "checkpoint": max(1, args.kills // 2)}
            for name, scenario in SCENARIOS.items():
                start = time.monotonic()
                report = scenario(Path(tmp) / name, kills[name], seed=args.seed)
                figures.record_faults(name, report)
                print(f"{report.summary(name)}  [{report.attempts} runs killed or completed, "
                      f"{time.monotonic() - start:.0f}s]", flush=True)
                if args.verbose:
                    for k in report.kills:
                        print(f"    attempt {k.attempt}: {k.kind} {k.point}: "
                              f"{'killed' if k.killed else 'finished first'} {k.where[:140]}")
                failures += [f"{name}: {f}" for f in report.failures]
        if args.only in (None, "pipeline"):
            start = time.monotonic()
            assets = args.assets or [s.asset for s in STEPS]
            reports = run_pipeline_faults(Path(tmp) / "pipeline", {a: args.pipeline_kills for a in assets},
                                          seed=args.seed, verbose=args.verbose,
                                          log=lambda line: print(line, flush=True))
            for name, report in reports.items():
                figures.record_pipeline_faults(name, report)
                failures += [f"{name}: {f}" for f in report.failures]
            print(f"pipeline faults: {len(reports)} assets in {time.monotonic() - start:.0f}s", flush=True)
        if args.only in (None, "bad-inputs"):
            start = time.monotonic()
            for i, case in enumerate(CASES):
                try:
                    run_case(case, Path(tmp) / "bad" / f"{i:03d}")
                    figures.record_bad_input(case.id, True)
                except Exception as exc:  # noqa: BLE001 - every unhandled input is reported, the run goes on
                    figures.record_bad_input(case.id, False)
                    failures.append(f"{case.id}: {type(exc).__name__}: {exc}")
            print(f"bad inputs: {len(CASES)} cases in {time.monotonic() - start:.0f}s", flush=True)
    for f in failures:
        print(f"FAILED {f[:2000]}")
    print("\n".join(figures.lines()))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
