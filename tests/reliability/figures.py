"""The figures the reliability suite prints: faults injected / recovered / failures (core writers, and Dagster
asset materializations: "pipeline faults"), bad inputs tried / handled.

Tests record into this module; ``conftest.py`` prints the lines at the end of a pytest session and
``python -m tests.reliability`` prints them after the full run.
"""

from __future__ import annotations

FAULTS: dict[str, tuple[int, int, int]] = {}  # scenario -> (injected, recovered, failures)
PIPELINE_FAULTS: dict[str, tuple[int, int, int]] = {}  # asset[partition] -> (injected, recovered, failures)
BAD_INPUTS: dict[str, bool] = {}  # case id -> handled


def record_faults(name: str, report) -> None:
    FAULTS[name] = (report.injected, report.recovered, len(report.failures))


def record_pipeline_faults(name: str, report) -> None:
    PIPELINE_FAULTS[name] = (report.injected, report.recovered, len(report.failures))


def record_bad_input(case_id: str, handled: bool) -> None:
    BAD_INPUTS[case_id] = handled


def lines() -> list[str]:
    out = []
    if FAULTS:
        injected, recovered, failures = (sum(v[i] for v in FAULTS.values()) for i in range(3))
        detail = ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in FAULTS.items())
        out.append(f"faults injected {injected} / recovered {recovered} / failures {failures}  ({detail})")
    if PIPELINE_FAULTS:
        injected, recovered, failures = (sum(v[i] for v in PIPELINE_FAULTS.values()) for i in range(3))
        detail = ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in PIPELINE_FAULTS.items())
        out.append(f"pipeline faults injected {injected} / recovered {recovered} / failures {failures}  ({detail})")
    if BAD_INPUTS:
        handled = sum(BAD_INPUTS.values())
        out.append(f"bad inputs tried {len(BAD_INPUTS)} / handled {handled}")
        missed = sorted(k for k, v in BAD_INPUTS.items() if not v)
        if missed:
            out.append(f"bad inputs NOT handled: {', '.join(missed)}")
    return out
