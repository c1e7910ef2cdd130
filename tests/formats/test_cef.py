"""CEF: exact escaping, length limits, mapping and severity, proven against real parsers.

``cefp`` parses every line we write back to the original values; it was checked to unescape
exactly what the specification defines (``test_cefp_unescapes_per_spec`` pins that, so a
cefp upgrade that changes it fails here first). ``cefevent`` in strict mode validates the
extension keys and values against the ArcSight dictionary; its dictionary lacks ``outcome``
(a standard CEF key, ``eventOutcome``, 63 characters), so that one key is checked against the
specification's limit instead.
"""

from __future__ import annotations

from typing import Any

import cefp
import pytest
from cefevent import CEFEvent
from cefevent.extensions import extension_dictionary
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import auditstream
from auditstream.formats import encode_json, make_encoder, to_event
from auditstream.formats.cef import CefEncoder, CefSettings, render_extension
from auditstream.formats.cef_escape import (
    EXTENSION_LIMITS,
    TRUNCATION_MARKER,
    escape_extension,
    escape_header,
    short_id,
    truncate,
)
from auditstream.sdm.registry import STREAMS
from tests.formats import samples

CEFEVENT_GAPS = {"outcome": 63}  # standard CEF keys missing from cefevent's dictionary
SPECIAL = [
    "|",
    "\\",
    "=",
    "\n",
    "\r",
    "\r\n",
    " ",
    "  ",
    "\\n",
    "\\=",
    "a=b",
    " k=v",
    "é",
    "中",
    "🎉",
    "\t",
    "\x00",
    "\u2028",
]

hostile = st.lists(
    st.one_of(st.sampled_from(SPECIAL), st.text(st.characters(codec="utf-8"), max_size=8)),
    max_size=12,
).map("".join)
huge = st.builds(lambda s, n: (s or "x") * n, hostile, st.integers(200, 1200))
any_value = st.one_of(hostile, hostile, huge)

ENCODER = CefEncoder()


def parse(line: str) -> dict[str, Any]:
    assert "\n" not in line and "\r" not in line, "a CEF event must stay one line"
    parsed: dict[str, Any] = cefp.parse(line)
    return parsed


def expected_extension(value: str, key: str) -> str:
    return truncate(value, EXTENSION_LIMITS[key])


def expected_header(value: str, limit: int) -> str:
    return truncate(value, limit).replace("\r", " ").replace("\n", " ")


def assert_cefevent_accepts(parsed: dict[str, Any]) -> None:
    """cefevent strict mode: every key is in the ArcSight dictionary, every value valid."""
    event = CEFEvent(strict=True)
    event.set_field("name", parsed["name"])
    event.set_field("signatureId", parsed["device"]["event_class_id"])
    event.set_field("severity", parsed["severity"])
    for key, value in parsed["extension"].items():
        if key in CEFEVENT_GAPS:
            assert len(value) <= CEFEVENT_GAPS[key]
            continue
        assert key in extension_dictionary, f"{key} is not an ArcSight extension key"
        meta = extension_dictionary[key]
        numeric = {"Integer", "Long"} & set(meta["data_type"])
        # Full-name path: cefevent's short-name path rejects a legitimate 0 (it tests truthiness).
        event.set_field(meta["full_name"], int(value) if numeric else value)


# --- the escaping primitives ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("a|b", "a|b"),  # pipes are not escaped in the extension
        ("a=b", "a\\=b"),
        ("a\\b", "a\\\\b"),
        ("line1\nline2", "line1\\nline2"),
        ("cr\rhere", "cr\\rhere"),
        ("\\=", "\\\\\\="),
        ("plain text é 中", "plain text é 中"),
    ],
)
def test_extension_escaping_follows_the_spec(raw: str, escaped: str) -> None:
    assert escape_extension(raw) == escaped


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [("a|b", "a\\|b"), ("a\\b", "a\\\\b"), ("a=b", "a=b"), ("two\nlines\r", "two lines ")],
)
def test_header_escaping_follows_the_spec(raw: str, escaped: str) -> None:
    assert escape_header(raw, 100) == escaped


def test_cefp_unescapes_per_spec() -> None:
    line = "CEF:0|V\\|x|P\\\\|1|c|n|5|msg=a\\=b\\\\c\\nd\\re|f cs1=  spaced  cs2=x"
    parsed = cefp.parse(line)
    assert parsed["device"]["vendor"] == "V|x" and parsed["device"]["product"] == "P\\"
    assert parsed["extension"] == {"msg": "a=b\\c\nd\re|f", "cs1": "  spaced ", "cs2": "x"}


def test_truncation_keeps_the_limit_and_marks_the_cut() -> None:
    assert truncate("x" * 10, 10) == "x" * 10
    cut = truncate("x" * 31, 30)
    assert cut == "x" * 16 + TRUNCATION_MARKER
    long = truncate("y" * 5000, 1023)
    assert len(long) == 1023 and long.endswith(TRUNCATION_MARKER)


def test_external_id_is_shortened_uniquely() -> None:
    a, b = "0" * 30 + ":user:a-0001", "0" * 30 + ":user:a-0002"
    assert short_id("short", 40) == "short"
    assert len(short_id(a, 40)) == 40 and short_id(a, 40) != short_id(b, 40)
    assert short_id(a, 40) == short_id(a, 40) and short_id(a, 40).startswith("0" * 23)


# --- properties over hostile values ---------------------------------------------------------


@given(st.dictionaries(st.sampled_from(sorted(k for k, v in EXTENSION_LIMITS.items() if v)), any_value))
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_rendered_extension_parses_back_to_the_values(values: dict[str, str]) -> None:
    pairs = [(k, v) for k, v in values.items() if not k.endswith("Label")]
    line = "CEF:0|V|P|1|c|n|5|" + render_extension(pairs, [])
    parsed = parse(line)["extension"]
    expected = {}
    for key, value in pairs:
        if value:
            expected[key] = short_id(value, 40) if key == "externalId" else expected_extension(value, key)
    assert parsed == expected


def _activity(verb: str, description: str, name: str, email: str, agent: str, ip: str) -> Any:
    record = samples.sample("activities")
    record.verb = verb  # type: ignore[attr-defined]
    record.description = description  # type: ignore[attr-defined]
    record.actor.first_name = name  # type: ignore[attr-defined]
    record.actor.email = email  # type: ignore[attr-defined]
    record.user_agent = agent  # type: ignore[attr-defined]
    record.ip_address = ip  # type: ignore[attr-defined]
    record.entities[0].email = email  # type: ignore[attr-defined]
    record.entities[1].name = name  # type: ignore[attr-defined]
    return record


@given(
    any_value,
    any_value,
    hostile,
    hostile,
    any_value,
    st.one_of(hostile, st.sampled_from(["10.1.2.3", "::1"])),
)
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
def test_activity_lines_parse_back_and_validate(
    verb: str, description: str, name: str, email: str, agent: str, ip: str
) -> None:
    event = to_event(STREAMS["activities"], _activity(verb, description, name, email, agent, ip))
    parsed = parse(ENCODER.encode(event))
    assert parsed["device"] == {
        "vendor": "StrongDM",
        "product": "auditstream",
        "version": auditstream.__version__,
        "event_class_id": expected_header(verb or "activity", 1023),
    }
    assert parsed["name"] == expected_header(verb or "activity", 512)
    ext = parsed["extension"]
    expect = {
        "act": verb,
        "msg": description,
        "suser": email or event["actorName"],
        "cs1": event["actorName"],
        "requestClientApplication": agent,
        "duser": email or "Bob Example",
        "dhost": name,
        "externalId": samples.ACTIVITY_ID,
        "cat": "activities",
    }
    for key, value in expect.items():
        if value:
            assert ext[key] == expected_extension(value, key), key
        else:
            assert key not in ext, key
    assert ("src" in ext) == (ip == "10.1.2.3") and ("c6a2" in ext) == (ip == "::1")
    assert_cefevent_accepts(parsed)


@given(any_value, hostile, hostile, any_value, hostile)
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
def test_query_lines_parse_back_and_validate(
    body: str, email: str, resource: str, target: str, user: str
) -> None:
    record = samples.sample("queries")
    record.query_body = body  # type: ignore[attr-defined]
    record.account_email = email  # type: ignore[attr-defined]
    record.resource_name = resource  # type: ignore[attr-defined]
    record.target = target  # type: ignore[attr-defined]
    record.remote_identity_username = user  # type: ignore[attr-defined]
    event = to_event(STREAMS["queries"], record)
    parsed = parse(ENCODER.encode(event))
    ext = parsed["extension"]
    for key, value in {"msg": body, "cs1": resource, "duser": user}.items():
        if value:
            assert ext[key] == expected_extension(value, key), key
        else:
            assert key not in ext
    assert ext["suser"] == expected_extension(email or "Alice Glick", "suser")
    assert ext["cn1"] == "12" and ext["cs4"] == "s1Uj1aKxKI4pbWQSNnqSwakP96k"
    assert_cefevent_accepts(parsed)


@given(any_value, any_value, hostile)
@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
def test_history_lines_parse_back_and_validate(name: str, hostname: str, tag: str) -> None:
    record = samples.sample("resources_history")
    record.resource.postgres.name = name  # type: ignore[attr-defined]
    record.resource.postgres.hostname = hostname  # type: ignore[attr-defined]
    record.resource.postgres.tags.pairs[0].value = tag  # type: ignore[attr-defined]
    event = to_event(STREAMS["resources_history"], record)
    parsed = parse(ENCODER.encode(event))
    ext = parsed["extension"]
    if name:
        assert ext["cs4"] == expected_extension(name, "cs4")
    if hostname or name:
        assert ext["dhost"] == expected_extension(hostname or name, "dhost")
    assert ext["cs6"] == event["id"] and ext["cs1"] == samples.ACTIVITY_ID
    assert len(ext["externalId"]) <= 40
    assert_cefevent_accepts(parsed)


def test_huge_values_are_cut_and_the_line_stays_valid() -> None:
    record = _activity("v" * 5000, "d\n=|\\" * 100_000, "n" * 5000, "e" * 5000, "u" * 5000, "1.2.3.4")
    line = ENCODER.encode(to_event(STREAMS["activities"], record))
    parsed = parse(line)
    assert len(line) < 20_000
    assert parsed["extension"]["msg"].endswith(TRUNCATION_MARKER) and len(parsed["extension"]["msg"]) == 1023
    assert len(parsed["extension"]["act"]) == 63
    assert len(parsed["name"]) == 512 and len(parsed["device"]["event_class_id"]) == 1023
    assert_cefevent_accepts(parsed)


# --- mapping details ------------------------------------------------------------------------


def test_every_golden_sample_validates_under_cefevent() -> None:
    for stream, event in samples.all_sample_events().items():
        parsed = parse(ENCODER.encode(event))
        assert_cefevent_accepts(parsed)
        assert parsed["extension"]["cat"] == stream
        assert parsed["extension"]["rt"] == "1714566896123"


def test_ip_addresses_go_to_src_or_c6a2_and_nothing_else_is_guessed() -> None:
    for ip, keys in (("198.51.100.7", {"src"}), ("2001:db8::7", {"c6a2", "c6a2Label"}), ("not-an-ip", set())):
        record = samples.sample("activities")
        record.ip_address = ip  # type: ignore[attr-defined]
        ext = parse(ENCODER.encode(to_event(STREAMS["activities"], record)))["extension"]
        assert {k for k in ext if k in ("src", "c6a2", "c6a2Label")} == keys
        assert ip not in ext.values() or keys


def test_hashed_numeric_fields_are_left_out_not_mistyped() -> None:
    event = to_event(STREAMS["queries"], samples.sample("queries"))
    event["durationMs"] = "hmac-sha256:abcd"
    event["timestamp"] = "hmac-sha256:abcd"
    ext = parse(ENCODER.encode(event))["extension"]
    assert "cn1" not in ext and "cn1Label" not in ext and "rt" not in ext and "start" not in ext


def test_query_target_gives_host_and_port() -> None:
    start, done = samples.query_pair()
    ext = parse(ENCODER.encode(to_event(STREAMS["queries"], done)))["extension"]
    assert (ext["dhost"], ext["dpt"]) == ("2001:db8::1", "22")
    assert ext["start"] == "1714554000000" and ext["end"] == "1714570200500"
    started = parse(ENCODER.encode(to_event(STREAMS["queries"], start)))
    assert "end" not in started["extension"] and started["name"] == "ssh query started"


def test_history_deletion_is_marked() -> None:
    parsed = parse(ENCODER.encode(to_event(STREAMS["roles_history"], samples.sample("roles_history"))))
    assert parsed["name"] == "role deleted" and parsed["extension"]["act"] == "deleted"
    assert parsed["extension"]["deviceCustomDate1Label"] == "deletedAt"
    assert parsed["extension"]["deviceCustomDate1"] == "1714566897000"


def test_unknown_log_type_gets_a_generic_line() -> None:
    parsed = parse(
        ENCODER.encode({"logType": "future_history", "id": "x1", "timestamp": "2024-01-01T00:00:00Z"})
    )
    assert parsed["device"]["event_class_id"] == "future_history"
    assert parsed["extension"] == {
        "rt": "1704067200000",
        "cat": "future_history",
        "externalId": "x1",
        "cs6Label": "id",
        "cs6": "x1",
    }
    assert parsed["severity"] == "5"


# --- severity -------------------------------------------------------------------------------


def _severity(encoder: CefEncoder, **event: Any) -> int:
    return int(parse(encoder.encode(event))["severity"])


@pytest.mark.parametrize(
    ("verb", "higher_than"),
    [
        ("user deleted", "user logged into the Admin UI"),
        ("user suspended", "user updated"),
        ("admin token created", "user added"),
        ("organization logging configuration updated", "user deleted"),
        ("failed login attempt from the Admin UI", "user logged into the local client"),
    ],
)
def test_default_severity_ranks_risky_verbs_higher(verb: str, higher_than: str) -> None:
    assert _severity(ENCODER, logType="activities", activity=verb) > _severity(
        ENCODER, logType="activities", activity=higher_than
    )


def test_severity_overrides_verb_then_stream_then_default() -> None:
    encoder = CefEncoder(
        CefSettings(
            severity={"user added": 9, "activities": 2, "queries": 7, "roles_history": 1}, default_severity=4
        )
    )
    assert _severity(encoder, logType="activities", activity="user added") == 9
    assert _severity(encoder, logType="activities", activity="user deleted") == 2
    assert _severity(encoder, logType="queries") == 7
    assert _severity(encoder, logType="roles_history", deletedAt="2024-01-01T00:00:00Z") == 1
    plain = CefEncoder(CefSettings(default_severity=4))
    assert _severity(plain, logType="activities", activity="something new in a later SDK") == 4
    assert _severity(plain, logType="groups_history", deletedAt=None) == 3
    assert _severity(plain, logType="groups_history", deletedAt="2024-01-01T00:00:00Z") == 6
    assert _severity(plain, logType="queries") == 3
    assert _severity(plain, logType="not_a_stream_of_this_build") == 4
    assert _severity(encoder, logType="not_a_stream_of_this_build") == 4
    unknown = CefEncoder(CefSettings(severity={"not_a_stream_of_this_build": 8}))
    assert _severity(unknown, logType="not_a_stream_of_this_build") == 8


@pytest.mark.parametrize(
    "bad",
    [
        {"default_severity": 11},
        {"severity": {"user added": -1}},
        {"severity": {"x": "high"}},
        {"vendor": "x"},
    ],
)
def test_cef_settings_reject_bad_values(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        CefSettings.model_validate(bad)


def test_make_encoder_gives_bytes_per_format() -> None:
    event = to_event(STREAMS["activities"], samples.sample("activities"))
    assert make_encoder("cef")(event).startswith(b"CEF:0|StrongDM|auditstream|")
    assert make_encoder("json")(event).startswith(b'{"logType":"activities"')
    assert make_encoder("json")(event) == encode_json(event)
    assert make_encoder("cef", CefSettings(severity={"activities": 1}))(event).split(b"|")[6] == b"1"
    with pytest.raises(ValueError, match="xml"):
        make_encoder("xml")  # type: ignore[arg-type]


def test_every_sdk_activity_verb_has_a_built_in_severity() -> None:
    """A verb no rule matches falls back to default_severity: none of the SDK's should."""
    from strongdm.constants import ActivityVerb

    from auditstream.formats.severity import activity_severity

    verbs = [v for k, v in vars(ActivityVerb).items() if not k.startswith("_") and isinstance(v, str)]
    assert len(verbs) > 200
    assert [v for v in verbs if activity_severity(v) is None] == []
