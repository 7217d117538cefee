"""The full reliability run: ``python -m tests.reliability`` (or ``bash tests/reliability/run``).

Kills the core atomic writers (ShardWriter, ArtifactStore commit, LRM training checkpoints) at many random
points and feeds every bad-input case to its consumer, then prints the figures:

    faults injected N / recovered N / failures 0
    bad inputs tried N / handled N

Exit status 1 when anything failed. ``pytest -q tests/reliability`` runs a reduced set of the same code.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE)]

import figures  # noqa: E402
from bad_input_cases import CASES, run_case  # noqa: E402
from scenarios import SCENARIOS  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=10, help="kills per scenario (checkpoint: half as many)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["faults", "bad-inputs"], help="run one half")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every kill point")
    args = parser.parse_args(argv)
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="vfusion3d-reliability-") as tmp:
        if args.only != "bad-inputs":
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
        if args.only != "faults":
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
