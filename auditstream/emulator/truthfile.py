"""``--truth-file``: every visible record as JSON lines, so a run can be checked for zero loss.

Written atomically (temporary file, then rename): a checker never reads half a file.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from auditstream.emulator.store import Store


def write_truth_file(store: Store, path: str | os.PathLike[str]) -> int:
    """Write ``{"stream", "key", "time_ns"}`` lines; returns how many records were written."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    count = 0
    with tmp.open("wb") as out:
        for entry in store.iter_truth():
            out.write(orjson.dumps({"stream": entry.stream, "key": entry.key, "time_ns": entry.time_ns}))
            out.write(b"\n")
            count += 1
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, target)
    return count


def read_truth_file(path: str | os.PathLike[str]) -> dict[str, dict[str, int]]:
    """``{stream: {key: time_ns}}`` from a truth file (for tests and checkers)."""
    truth: dict[str, dict[str, int]] = {}
    with Path(path).open("rb") as lines:
        for line in lines:
            entry = orjson.loads(line)
            truth.setdefault(entry["stream"], {})[entry["key"]] = entry["time_ns"]
    return truth
