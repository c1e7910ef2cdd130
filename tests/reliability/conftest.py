"""The reliability suite: crashes, sink outages, API storms, storage faults, bad input.

Every case compares what the sinks received with the emulator's ground truth, asserts that
no record is missing and reports duplicates. ``pytest -m reliability`` runs the suite alone
(``make test`` runs it with everything else). Each case records its figures with the
``figures`` fixture; the table is printed at the end of the run and, when
``AUDITSTREAM_RELIABILITY_REPORT`` names a file, written there as JSON (``python -m bench
reliability`` puts it into BENCHMARKS.md).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

import pytest

from tests.reliability.support import RESULTS, Figures, markdown_table

REPORT_ENV = "AUDITSTREAM_RELIABILITY_REPORT"


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[Callable[..., None]]:
    started = time.monotonic()

    def record(*, load: str, faults: str, records: int, lost: int, duplicates: int) -> None:
        RESULTS.append(
            Figures(request.node.name, load, faults, records, lost, duplicates, time.monotonic() - started)
        )

    yield record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RESULTS:
        return
    rows = [asdict(result) for result in RESULTS]
    terminalreporter.write_sep("-", "reliability figures")
    for line in markdown_table(rows):
        terminalreporter.write_line(line)
    target = os.environ.get(REPORT_ENV)
    if target:
        with open(target, "w") as handle:
            json.dump(rows, handle, indent=1)
