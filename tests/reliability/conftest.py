"""Reliability suite: prints its figures (faults injected / recovered, bad inputs tried / handled) at the end."""

from __future__ import annotations

import figures


def pytest_terminal_summary(terminalreporter) -> None:
    lines = figures.lines()
    if lines:
        terminalreporter.section("reliability figures")
        for line in lines:
            terminalreporter.write_line(line)
