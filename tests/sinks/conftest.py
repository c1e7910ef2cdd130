"""Helpers for sink tests: envelopes with awkward content, fast retry settings, and the
delivery checks every fault test makes."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import pytest

from auditstream.sinks.base import Envelope

FAST_RETRY = {"initial": 0.02, "maximum": 0.1, "unhealthy_after": 60}
AWKWARD = 'line one\nline two "quoted" ] \\ back=slash | pipe é'


def envelopes(stream: str, count: int, start: int = 0, **extra: Any) -> list[Envelope]:
    base_ns = 1_714_564_800_123_456_789
    return [
        Envelope(
            stream=stream,
            key=f"{stream}-{i}",
            time_ns=base_ns + i * 1_000_000,
            event={"id": f"{stream}-{i}", "stream": stream, "seq": i, "message": AWKWARD, **extra},
        )
        for i in range(start, start + count)
    ]


def assert_delivered(
    requests: Iterable[Iterable[dict[str, Any]]],
    expected: Iterable[Envelope],
    *,
    allow_retried_copies: bool = True,
) -> None:
    """Every expected event arrived; within a stream in order; no duplicates except whole
    copies of a retried request."""
    requests = [list(r) for r in requests]
    if allow_retried_copies:
        unique: list[list[dict[str, Any]]] = []
        for request in requests:
            if request not in unique:
                unique.append(request)
        requests = unique
    received = [event for request in requests for event in request]
    ids = [event["id"] for event in received]
    assert len(ids) == len(set(ids)), f"duplicates outside retried requests: {len(ids) - len(set(ids))}"
    expected = list(expected)
    assert set(ids) == {e.key for e in expected}, (
        f"missing {sorted({e.key for e in expected} - set(ids))[:5]}"
    )
    by_stream: dict[str, list[int]] = defaultdict(list)
    for event in received:
        by_stream[event["stream"]].append(event["seq"])
    for stream, seqs in by_stream.items():
        assert seqs == sorted(seqs), f"stream {stream} out of order"


def logged(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> str:
    """Everything logged so far, whether structlog prints (its default) or goes via logging."""
    captured = capsys.readouterr()
    print(captured.out, end="")  # keep it for the next call and for failure reports
    return caplog.text + captured.out + captured.err


@pytest.fixture
def state_dir(tmp_path):
    return tmp_path / "state"


PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy")


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch):
    """The HTTP sinks honour the proxy variables: each test sets those it is about, and none
    leaks in from the machine (a proxy there would carry the tests' loopback traffic)."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
