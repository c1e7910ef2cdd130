"""Credentials of history entities never reach a sink unless ``keep_credentials`` is set.

The list of credential fields is derived from the SDK's descriptors (``formats.credentials``);
these tests hold the rule to account over every message type reachable from the streams, so
an SDK upgrade that adds a suspicious field fails here until it is redacted or allow-listed.
"""

from __future__ import annotations

import orjson
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from auditstream.formats import NormalizeSettings, compiled, credentials, make_encoder, to_event
from auditstream.formats.events import history_entity_key
from auditstream.sdm.registry import STREAMS
from tests.formats import samples

SECRET = "s3cr3t-value-that-must-not-leak"


def _reachable() -> dict[str, Descriptor]:
    seen: dict[str, Descriptor] = {}
    stack = [spec.record_class.DESCRIPTOR for spec in STREAMS.values()]
    while stack:
        descriptor = stack.pop()
        if descriptor.full_name in seen:
            continue
        seen[descriptor.full_name] = descriptor
        stack.extend(f.message_type for f in descriptor.fields if f.message_type is not None)
    return seen


REACHABLE = _reachable()


def _suspicious_fields() -> list[tuple[Descriptor, FieldDescriptor]]:
    return [
        (descriptor, field)
        for descriptor in REACHABLE.values()
        for field in descriptor.fields
        if credentials.looks_like_credential(field)
    ]


def _with_field(descriptor: Descriptor, field: FieldDescriptor, value: str) -> object:
    message = message_factory.GetMessageClass(descriptor)()
    data: object = value.encode() if field.type == FieldDescriptor.TYPE_BYTES else value
    if field.is_repeated:
        getattr(message, field.name).append(data)
    else:
        setattr(message, field.name, data)
    return message


def test_every_suspicious_field_is_redacted_or_allow_listed_with_a_reason() -> None:
    redacted = []
    for descriptor, field in _suspicious_fields():
        reason = credentials.allow_reason(field)
        if reason is not None:
            assert len(reason) > 10, f"{descriptor.full_name}.{field.name}: give a real reason"
            continue
        converted = compiled.converter_for(descriptor)(_with_field(descriptor, field, SECRET))  # type: ignore[arg-type]
        value = converted[compiled.event_key(field)]
        assert value == ([credentials.REDACTED] if field.is_repeated else credentials.REDACTED)
        assert SECRET not in orjson.dumps(converted).decode(), f"{descriptor.full_name}.{field.name}"
        redacted.append(field.name)
    # The rule must find the credentials a security engineer expects, in many resource types.
    assert {"password", "private_key", "secret_access_key", "token", "client_key", "keytab"} <= set(redacted)
    assert redacted.count("password") > 50


def test_the_rule_only_considers_text_and_bytes_fields() -> None:
    """Flags, counters, timestamps and nested messages hold no credential material themselves."""
    for descriptor in REACHABLE.values():
        for field in descriptor.fields:
            if field.type not in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
                assert not credentials.is_credential(field)


def test_allow_list_has_no_stale_entries() -> None:
    names = {f.name for d in REACHABLE.values() for f in d.fields}
    qualified = {f"{d.full_name}.{f.name}" for d in REACHABLE.values() for f in d.fields}
    stale = [entry for entry in credentials.NOT_CREDENTIALS if entry not in names | qualified]
    assert not stale, f"allow-listed fields that no message has: {stale}"
    for message, (flag, field) in credentials.SECRET_FLAGS.items():
        fields = REACHABLE[message].fields_by_name
        assert fields[flag].type == FieldDescriptor.TYPE_BOOL and field in fields


def test_keep_credentials_keeps_every_value() -> None:
    for descriptor, field in _suspicious_fields():
        converted = compiled.converter_for(descriptor, keep_credentials=True)(
            _with_field(descriptor, field, SECRET)  # type: ignore[arg-type]
        )
        assert SECRET in orjson.dumps(converted).decode() or field.type == FieldDescriptor.TYPE_BYTES


def test_resource_password_end_to_end_in_json_and_cef() -> None:
    spec = STREAMS["resources_history"]
    record = samples.sample("resources_history")
    record.resource.postgres.password = SECRET  # type: ignore[attr-defined]
    event = to_event(spec, record)
    assert event["resource"]["password"] == credentials.REDACTED
    for fmt in ("json", "cef"):
        assert SECRET.encode() not in make_encoder(fmt)(event)  # type: ignore[arg-type]
    kept = to_event(spec, record, keep_credentials=True)
    assert kept["resource"]["password"] == SECRET
    assert {k: v for k, v in kept["resource"].items() if k != "password"} == {
        k: v for k, v in event["resource"].items() if k != "password"
    }


def test_unset_credentials_stay_empty() -> None:
    """An empty credential is not marked: analysts see which resources hold one inline."""
    event = to_event(STREAMS["resources_history"], samples.sample("resources_history"))
    assert event["resource"]["password"] == ""


def test_secret_custom_header_values_are_redacted_only_when_marked_secret() -> None:
    spec = STREAMS["resources_history"]
    record = spec.record_class(activity_id="act")
    headers = record.resource.http_no_auth.custom_headers.custom_headers
    headers.add(name="X-Api-Key", value=SECRET, secret=True)
    headers.add(name="X-Team", value="sre", secret=False)
    event = to_event(spec, record)
    entity = event[history_entity_key(spec)]
    assert entity["customHeaders"]["customHeaders"] == [
        {"name": "X-Api-Key", "value": credentials.REDACTED, "secret": True},
        {"name": "X-Team", "value": "sre", "secret": False},
    ]
    kept = to_event(spec, record, keep_credentials=True)[history_entity_key(spec)]
    assert kept["customHeaders"]["customHeaders"][0]["value"] == SECRET


def test_settings_default_to_redacting() -> None:
    settings = NormalizeSettings()
    assert settings.keep_credentials is False
    record = samples.sample("resources_history")
    record.resource.postgres.password = SECRET  # type: ignore[attr-defined]
    spec = STREAMS["resources_history"]
    assert settings.event_converter(spec)(record)["resource"]["password"] == credentials.REDACTED
    keep = NormalizeSettings.model_validate({"keep_credentials": True})
    assert keep.event_converter(spec)(record)["resource"]["password"] == SECRET


def test_generated_source_shows_the_redaction() -> None:
    postgres = REACHABLE["v1.Postgres"]
    assert "'password': _REDACTED if m.password else ''" in compiled.source_of(postgres)
    assert "'password': m.password" in compiled.source_of(postgres, keep_credentials=True)
