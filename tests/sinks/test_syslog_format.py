"""Syslog message layout, escaping, framing and the UDP size policy, rule by rule."""

from __future__ import annotations

import re

import pytest

from auditstream.sinks.syslog import SyslogSinkSettings
from auditstream.sinks.syslog_format import (
    TRUNCATION_MARKER,
    SyslogFormatter,
    fit_datagram,
    frame,
    header_field,
    rfc3164_timestamp,
    rfc5424_timestamp,
    sd_escape,
    sd_name,
)

T = 1_714_564_800_123_456_789  # 2024-05-01T12:00:00.123456789Z


def formatter(**overrides):
    config = {
        "rfc": 5424,
        "facility": 16,
        "severity": 6,
        "hostname": "bastion-1",
        "app_name": "auditstream",
        "structured_data": True,
        "sd_id": "auditstream@32473",
    }
    config.update(overrides)
    return SyslogFormatter(**config)


def test_rfc5424_layout_with_structured_data():
    message = formatter().format("activities", 'k"1]\\', T, b'{"a":1}')
    assert message == (
        b"<134>1 2024-05-01T12:00:00.123456Z bastion-1 auditstream - activities "
        b'[auditstream@32473 stream="activities" id="k\\"1\\]\\\\"] {"a":1}'
    )


def test_rfc5424_without_structured_data_uses_the_nilvalue():
    assert formatter(structured_data=False).format("queries", "k", T, b"x").endswith(b" queries - x")


def test_timestamps_have_exactly_six_fractional_digits():
    assert rfc5424_timestamp(T) == "2024-05-01T12:00:00.123456Z"
    assert rfc5424_timestamp(1_000_000_000) == "1970-01-01T00:00:01.000000Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", rfc5424_timestamp(T + 999))


def test_header_fields_are_printable_ascii_cut_to_their_limits():
    assert header_field("", 48) == "-"
    assert header_field("a b\tc", 48) == "a_b_c"
    assert header_field("x" * 40, 32) == "x" * 32
    long_stream = "a_very_long_stream_name_that_goes_on_history"
    assert formatter().format(long_stream, "k", T, b"m").split(b" ")[5] == long_stream[:32].encode()
    assert formatter(app_name="é" * 60).format("s", "k", T, b"m").split(b" ")[3] == b"_" * 48


def test_sd_names_and_values_are_escaped_per_rfc():
    assert sd_escape('a"b\\c]d') == 'a\\"b\\\\c\\]d'
    assert sd_name('bad=name"]') == "bad_name__"
    cut = sd_name("x" * 40 + "@32473")
    assert len(cut) == 32 and cut.endswith("@32473")


def test_rfc3164_layout_tag_and_padded_day():
    message = formatter(rfc=3164, app_name="audit stream/" + "t" * 40).format(
        "s", "k", 1_715_000_000 * 10**9, b"m"
    )
    assert message.startswith(b"<134>May  6 12:53:20 bastion-1 ")
    tag = message.split(b" ")[5]
    assert tag.endswith(b":") and len(tag) - 1 == 32
    assert rfc3164_timestamp(T) == "May  1 12:00:00"


def test_octet_counting_counts_bytes_and_keeps_newlines():
    message = "ü\nline".encode()
    assert frame(message, "octet-counting") == b"7 \xc3\xbc\nline"


def test_lf_framing_cannot_let_a_newline_split_a_message():
    assert frame(b"a\nb\rc", "lf") == b"a\\nb\\rc\n"


def test_udp_truncates_at_a_character_boundary_with_a_marker_or_refuses():
    message = b"<134>1 " + "é".encode() * 600  # 1207 bytes
    cut = fit_datagram(message, 480, "truncate")
    assert cut is not None and len(cut) <= 480 and cut.endswith(TRUNCATION_MARKER)
    cut.decode("utf-8")  # still valid UTF-8
    assert fit_datagram(message, 480, "refuse") is None
    assert fit_datagram(b"short", 480, "refuse") == b"short"


def test_rfc3164_udp_limit_is_1024_whatever_udp_max_bytes_says():
    config = SyslogSinkSettings(name="s", host="127.0.0.1", transport="udp", rfc=3164, udp_max_bytes=4096)
    assert config.datagram_limit == 1024
    assert SyslogSinkSettings(name="s", host="h", transport="udp").datagram_limit == 2048
    assert SyslogSinkSettings(name="s", host="h", transport="tls").effective_port == 6514


def test_unknown_facility_is_a_config_error():
    with pytest.raises(ValueError, match="not a facility"):
        SyslogSinkSettings(name="s", host="h", facility="local9")
