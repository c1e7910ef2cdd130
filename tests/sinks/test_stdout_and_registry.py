"""stdout, and building every sink type from configuration (as config.toml gives it)."""

from __future__ import annotations

import errno
import io
import json
import sys
from pathlib import Path

import pytest
from pydantic import TypeAdapter

from auditstream.formats.cef import CefSettings
from auditstream.sinks.base import Sink
from auditstream.sinks.file import FileSink
from auditstream.sinks.http import HttpSink
from auditstream.sinks.registry import SinkSettings, create_sink
from auditstream.sinks.splunk_hec import SplunkHecSink
from auditstream.sinks.stdout import StdoutSink, StdoutSinkSettings
from auditstream.sinks.syslog import SyslogSink
from tests.sinks.conftest import FAST_RETRY, envelopes

ADAPTER: TypeAdapter[SinkSettings] = TypeAdapter(SinkSettings)


async def test_stdout_writes_one_line_per_event(capsysbinary, state_dir):
    sink = StdoutSink(StdoutSinkSettings(batch={"max_age": 0}), state_dir=state_dir)  # type: ignore[arg-type]
    await sink.start()
    batch = envelopes("activities", 3)
    await sink.send(batch)
    await sink.close()
    out = capsysbinary.readouterr().out.splitlines()
    assert [json.loads(line) for line in out] == [e.event for e in batch]


async def test_stdout_write_errors_are_retried_without_duplicates(monkeypatch, state_dir):
    class FlakyBuffer:
        def __init__(self) -> None:
            self.data = b""
            self.failures = 2

        def write(self, data: bytes) -> int:
            if self.failures:
                self.failures -= 1
                raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
            self.data += data
            return len(data)

        def flush(self) -> None:
            return None

    class FlakyStdout(io.StringIO):  # text writes (logs) work; the binary buffer is flaky
        def __init__(self) -> None:
            super().__init__()
            self.buffer = FlakyBuffer()

    flaky = FlakyStdout()
    monkeypatch.setattr(sys, "stdout", flaky)
    sink = StdoutSink(StdoutSinkSettings(batch={"max_age": 0}, retry=FAST_RETRY), state_dir=state_dir)  # type: ignore[arg-type]
    await sink.start()
    batch = envelopes("activities", 4)
    await sink.send(batch)
    await sink.close()
    assert flaky.buffer.failures == 0
    assert [json.loads(line) for line in flaky.buffer.data.splitlines()] == [e.event for e in batch]


@pytest.mark.parametrize(
    ("config", "kind"),
    [
        ({"type": "file", "name": "f", "path": "/tmp/x.jsonl", "rotate_bytes": 1_000_000}, FileSink),
        ({"type": "stdout"}, StdoutSink),
        ({"type": "http", "name": "h", "url": "https://logs.example/in", "body": "json_array"}, HttpSink),
        (
            {"type": "splunk_hec", "name": "s", "url": "https://splunk:8088", "token": "t", "ack": True},
            SplunkHecSink,
        ),
        ({"type": "syslog", "name": "y", "host": "siem", "transport": "tls", "format": "cef"}, SyslogSink),
    ],
)
def test_every_type_is_built_from_config(config, kind, tmp_path):
    parsed = ADAPTER.validate_python(config)
    sink = create_sink(parsed, CefSettings(), tmp_path)
    assert isinstance(sink, kind) and isinstance(sink, Sink)
    assert sink.dead_letter.path == tmp_path / "dead-letter" / f"{parsed.name}.jsonl"  # type: ignore[attr-defined]


def test_unknown_keys_are_rejected_and_dead_letter_path_is_configurable():
    with pytest.raises(ValueError, match="extra"):
        ADAPTER.validate_python({"type": "syslog", "name": "y", "host": "h", "framming": "lf"})
    parsed = ADAPTER.validate_python({"type": "stdout", "dead_letter_path": "/var/dl.jsonl"})
    assert create_sink(parsed).dead_letter.path == Path("/var/dl.jsonl")  # type: ignore[attr-defined]


def test_secrets_can_come_from_files(tmp_path):
    (tmp_path / "pw").write_text("hunter2\n")
    parsed = ADAPTER.validate_python(
        {"type": "http", "name": "h", "url": "https://x/in", "auth": "basic", "username": "u",
         "password_file": str(tmp_path / "pw")}
    )  # fmt: skip
    assert parsed.password.get_secret_value() == "hunter2"  # type: ignore[union-attr]
    assert "hunter2" not in repr(parsed)
