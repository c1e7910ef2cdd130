"""Counts the schema tests report: how many events of each OCSF class (per release) and ECS
category they validated, printed in pytest's terminal summary (visible without ``-s``)."""

from __future__ import annotations

from collections import Counter
from typing import Any

SCHEMA_COUNTS: dict[str, Counter[str]] = {}


def count(table: str, key: str) -> None:
    SCHEMA_COUNTS.setdefault(table, Counter())[key] += 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not SCHEMA_COUNTS:
        return
    terminalreporter.section("events validated against the SIEM schemas")
    for table, counts in sorted(SCHEMA_COUNTS.items()):
        terminalreporter.write_line(f"{table}: {sum(counts.values())} events")
        for key, n in sorted(counts.items()):
            terminalreporter.write_line(f"  {n:5d}  {key}")
