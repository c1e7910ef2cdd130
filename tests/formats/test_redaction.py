"""Redaction: dropped fields are gone from every format, hashes are keyed and stable."""

from __future__ import annotations

import copy
import hashlib
import hmac
from typing import Any

import pytest
from pydantic import ValidationError

from auditstream.formats import NormalizeSettings, RedactionRule, Redactor, make_encoder, to_event
from auditstream.formats.redaction import HASH_PREFIX
from auditstream.sdm.registry import STREAMS
from tests.formats import samples

KEY = b"k" * 32


def _query_event() -> dict[str, Any]:
    return to_event(STREAMS["queries"], samples.sample("queries"))


def _rules(*pairs: tuple[str, str]) -> list[RedactionRule]:
    return [RedactionRule(field=f, action=a) for f, a in pairs]  # type: ignore[arg-type]


def test_drop_removes_the_field_from_json_and_cef() -> None:
    event = _query_event()
    body = event["queryBody"]
    redacted = Redactor(_rules(("queryBody", "drop")), None).apply(event)
    assert "queryBody" not in redacted
    assert body.encode() not in make_encoder("json")(redacted)
    cef_line = make_encoder("cef")(redacted).decode()
    assert "msg=" not in cef_line and "SELECT" not in cef_line
    assert event["queryBody"] == body  # the input is untouched


def test_hash_is_hmac_sha256_of_the_value_and_stable_per_key() -> None:
    event = _query_event()
    redactor = Redactor(_rules(("queryBody", "hash"), ("accountEmail", "hash")), KEY)
    once, twice = redactor.apply(event), redactor.apply(copy.deepcopy(event))
    expected = HASH_PREFIX + hmac.new(KEY, event["queryBody"].encode(), hashlib.sha256).hexdigest()
    assert once["queryBody"] == twice["queryBody"] == expected
    assert once["accountEmail"] != event["accountEmail"] and once["accountEmail"].startswith(HASH_PREFIX)
    # The CEF line carries the hash, never the value.
    line = make_encoder("cef")(once).decode()
    assert f"msg={expected}" in line and "alice.glick@example.com" not in line


def test_a_different_key_gives_a_different_hash() -> None:
    event = _query_event()
    rules = _rules(("queryBody", "hash"))
    assert (
        Redactor(rules, KEY).apply(event)["queryBody"]
        != Redactor(rules, b"other key").apply(event)["queryBody"]
    )


def test_equal_values_hash_equal_different_values_differ() -> None:
    redactor = Redactor(_rules(("a", "hash"), ("b", "hash"), ("c", "hash")), KEY)
    out = redactor.apply({"a": "same", "b": "same", "c": "other"})
    assert out["a"] == out["b"] != out["c"]


def test_non_string_values_hash_canonically_and_null_stays_null() -> None:
    redactor = Redactor(_rules(("tags", "hash"), ("count", "hash"), ("gone", "hash")), KEY)
    one = redactor.apply({"tags": {"a": "1", "b": "2"}, "count": 3, "gone": None})
    two = redactor.apply({"tags": {"b": "2", "a": "1"}, "count": 3, "gone": None})
    assert one == two
    assert one["tags"].startswith(HASH_PREFIX) and one["count"].startswith(HASH_PREFIX)
    assert one["gone"] is None


def test_nested_dotted_path() -> None:
    start, _ = samples.query_pair()
    event = to_event(STREAMS["queries"], start)
    redacted = Redactor(_rules(("capture.env", "drop"), ("capture.command", "hash")), KEY).apply(event)
    assert "env" not in redacted["capture"]
    assert redacted["capture"]["command"].startswith(HASH_PREFIX)
    assert redacted["capture"]["width"] == 120
    assert event["capture"]["env"] and event["capture"]["command"] == "bash -l"  # input untouched


def test_path_through_a_list_applies_to_every_element() -> None:
    event = to_event(STREAMS["activities"], samples.sample("activities"))
    redacted = Redactor(_rules(("entityDetails.email", "drop")), None).apply(event)
    assert all("email" not in entity for entity in redacted["entityDetails"])
    assert all("email" in entity for entity in event["entityDetails"])
    assert "bob@example.com" not in make_encoder("cef")(redacted).decode().split("cs3=")[1]


def test_wildcard_and_dotted_map_keys() -> None:
    event = {"capture": {"env": {"A": "1", "B": "2"}}, "resourceTags": {"team.io/owner": "x", "env": "prod"}}
    out = Redactor(_rules(("capture.env.*", "hash"), ("resourceTags.team.io/owner", "drop")), KEY).apply(
        event
    )
    assert all(v.startswith(HASH_PREFIX) for v in out["capture"]["env"].values())
    assert out["resourceTags"] == {"env": "prod"}


def test_polymorphic_entity_credentials_can_be_dropped() -> None:
    spec = STREAMS["resources_history"]
    record = samples.sample("resources_history")
    record.resource.postgres.password = "hunter2"  # type: ignore[attr-defined]
    event = Redactor(_rules(("resource.password", "drop")), None).apply(to_event(spec, record))
    assert "password" not in event["resource"]
    for fmt in ("json", "cef"):
        assert b"hunter2" not in make_encoder(fmt)(event)  # type: ignore[arg-type]


def test_missing_fields_are_ignored_and_no_rules_is_a_copy() -> None:
    event = {"a": 1}
    assert Redactor(_rules(("nope", "drop"), ("a.b.c", "drop")), None).apply(event) == {"a": 1}
    empty = Redactor([], None)
    assert not empty.active
    out = empty.apply(event)
    assert out == event and out is not event


def test_hash_rule_without_key_is_a_config_error_naming_the_field() -> None:
    with pytest.raises(ValueError, match="queryBody"):
        Redactor(_rules(("queryBody", "hash")), None)
    with pytest.raises(ValidationError, match="queryBody"):
        NormalizeSettings.model_validate({"redact": [{"field": "queryBody", "action": "hash"}]})


def test_settings_build_the_redactor_and_hide_the_key() -> None:
    settings = NormalizeSettings.model_validate(
        {"redact": [{"field": "queryBody", "action": "hash"}], "hash_key": "s3cret"}
    )
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.model_dump())
    out = settings.redactor().apply({"queryBody": "x"})
    assert out["queryBody"] == HASH_PREFIX + hmac.new(b"s3cret", b"x", hashlib.sha256).hexdigest()


@pytest.mark.parametrize(
    "bad",
    [
        {"redact": [{"field": "queryBody", "action": "mask"}]},
        {"redact": [{"field": "", "action": "drop"}]},
        {"redact": [{"field": "a..b", "action": "drop"}]},
        {"redact": [{"field": "a", "action": "drop", "extra": 1}]},
        {"unknown": True},
    ],
)
def test_settings_reject_bad_configuration(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        NormalizeSettings.model_validate(bad)
