"""What the SIEM-native sinks share (auditstream/sinks/siem.py), and their example config."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from pydantic import TypeAdapter

from auditstream.sinks.registry import SinkSettings
from auditstream.sinks.retry import TransientError
from auditstream.sinks.siem import StreamTemplate, record_time, settle_items


def test_record_time_is_the_records_time_cut_not_rounded():
    time_ns = 1_714_566_896_123_456_789  # 2024-05-01T12:34:56.123456789Z
    assert record_time(time_ns) == "2024-05-01T12:34:56.123456789Z"
    assert record_time(time_ns, 7) == "2024-05-01T12:34:56.1234567Z"
    assert record_time(1_714_566_896_999_999_999, 7) == "2024-05-01T12:34:56.9999999Z"
    assert record_time(time_ns, 0) == "2024-05-01T12:34:56Z"


def test_stream_templates_resolve_once_per_stream():
    template = StreamTemplate("logs-strongdm.{stream}-default")
    assert template.per_stream and template("queries") == "logs-strongdm.queries-default"
    assert not StreamTemplate("fixed").per_stream


def test_items_refused_for_a_passing_reason_go_again_alone():
    result = settle_items(5, {1: "bad"}, [3, 0], TransientError("busy"))
    assert result.rejected == {1: "bad"} and result.resend == [[0, 3]]
    halves = settle_items(4, {}, [], None, [[0, 1], [2, 3]])
    assert halves.resend == [[0, 1], [2, 3]]


def test_when_every_item_failed_for_a_passing_reason_the_error_is_raised_for_backoff():
    with pytest.raises(TransientError, match="busy"):
        settle_items(3, {}, [0, 1, 2], TransientError("busy"))


def test_the_example_configs_siem_sinks_are_valid_once_uncommented(tmp_path):
    """config/auditstream.example.toml ships them commented out (uncomment the SIEM you use)."""
    text = (Path(__file__).resolve().parents[2] / "config" / "auditstream.example.toml").read_text()
    block = text[text.index('# [[sinks]]\n# type = "azure_monitor"') : text.index("# AWS sinks:")]
    document = "\n".join(
        line[2:] for line in block.splitlines() if line.startswith("# ") and line[2:3] != "#"
    ).replace("/run/secrets/auditstream/", f"{tmp_path}/")
    for name in ("entra-client-secret", "elastic-api-key", "datadog-api-key"):
        value = "ZWxhc3RpYy1pZDplbGFzdGljLWtleQ==" if name == "elastic-api-key" else f"{name}-value"
        (tmp_path / name).write_text(value)
    sinks = [TypeAdapter(SinkSettings).validate_python(item) for item in tomllib.loads(document)["sinks"]]
    assert [s.type for s in sinks] == ["azure_monitor", "elasticsearch", "datadog"]
