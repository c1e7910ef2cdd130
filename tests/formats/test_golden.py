"""Golden files: one event per stream, as JSON (pretty, readable) and as its CEF line.

Any change to names, shapes, mappings or escaping shows up as a diff of a checked-in file.
Regenerate deliberately with ``UPDATE_GOLDEN=1 .venv/bin/pytest tests/formats/test_golden.py``
and review the diff; with ``CI`` set as well the tests fail (CI checks the files, it never
rewrites them). The CEF header's device version is pinned to ``golden`` so a release does not
rewrite every file.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
from google.protobuf.message import Message

from auditstream.formats import encode_json, to_event
from auditstream.formats.cef import CefEncoder
from auditstream.sdm.registry import STREAMS
from tests.formats import samples

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
IN_CI = bool(os.environ.get("CI"))
CEF = CefEncoder(device_version="golden")


def _cases() -> dict[str, Message]:
    cases = samples.all_samples()
    start, done = samples.query_pair()
    cases["queries_long_running_start"] = start
    cases["queries_long_running_done"] = done
    return cases


CASES = _cases()


def _check(path: Path, actual: str) -> None:
    if UPDATE:
        assert not IN_CI, "UPDATE_GOLDEN=1 in CI would rewrite the golden files instead of checking them"
        path.write_text(actual, encoding="utf-8")
    assert path.exists(), f"{path.name} missing: run with UPDATE_GOLDEN=1 and review it"
    assert actual == path.read_text(encoding="utf-8"), f"{path.name} differs (UPDATE_GOLDEN=1 to accept)"


def _event(case: str) -> dict[str, object]:
    if case in STREAMS:
        return samples.sample_event(case)
    return to_event(STREAMS["queries"], CASES[case])


@pytest.mark.parametrize("case", list(CASES))
def test_golden_json(case: str) -> None:
    event = _event(case)
    assert orjson.loads(encode_json(event)) == event
    _check(GOLDEN / f"{case}.json", orjson.dumps(event, option=orjson.OPT_INDENT_2).decode() + "\n")


@pytest.mark.parametrize("case", list(CASES))
def test_golden_cef(case: str) -> None:
    line = CEF.encode(_event(case))
    _check(GOLDEN / f"{case}.cef", line + "\n")


def test_every_stream_has_golden_files() -> None:
    missing = [
        f"{name}.{ext}"
        for name in STREAMS
        for ext in ("json", "cef")
        if not (GOLDEN / f"{name}.{ext}").is_file()
    ]
    assert not missing, f"no golden file for: {', '.join(missing)}"


def test_no_stale_golden_files() -> None:
    known = {f"{case}.{ext}" for case in CASES for ext in ("json", "cef")}
    stale = sorted(p.name for p in GOLDEN.iterdir() if p.name not in known)
    assert not stale, f"golden files for no case: {stale}"
