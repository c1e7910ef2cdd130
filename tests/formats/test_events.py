"""Protobuf record -> event dict: names, shapes and values per stream kind."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor
from hypothesis import given
from hypothesis import strategies as st

from auditstream.formats import compiled, protovalues
from auditstream.formats.events import FORMAT_VERSION, LOG_STREAM_FORMAT_VERSION, history_entity_key, to_event
from auditstream.sdm.registry import STREAMS, StreamKind
from tests.formats import samples

LOG_STREAM_ACTIVITY_KEYS = {
    "activity",
    "actorAccountID",
    "actorEmail",
    "actorExternalID",
    "actorFirstName",
    "actorLastName",
    "actorName",
    "description",
    "entities",
    "formatVersion",
    "id",
    "ipAddress",
    "logType",
    "timestamp",
    "userAgent",
}


@pytest.mark.parametrize("stream", list(STREAMS))
def test_every_stream_has_the_common_keys(stream: str) -> None:
    spec = STREAMS[stream]
    record = samples.sample(stream)
    event = samples.sample_event(stream)
    assert event["logType"] == stream
    key = spec.record_key(record)
    assert event["id"] == (f"{key}#0" if stream == "replays" else key)
    assert isinstance(event["id"], str)
    assert event["timestamp"] == "2024-05-01T12:34:56.123456789Z"
    expected_version = LOG_STREAM_FORMAT_VERSION if spec.kind is StreamKind.ACTIVITY else FORMAT_VERSION
    assert event["formatVersion"] == expected_version


def test_activity_uses_exactly_the_log_stream_names() -> None:
    event = to_event(STREAMS["activities"], samples.sample("activities"))
    assert set(event) == LOG_STREAM_ACTIVITY_KEYS | {"entityDetails"}
    assert event["activity"] == "user suspended"
    assert event["actorAccountID"] == "a-0abcdabcdab00001"
    assert event["actorEmail"] == "alice.glick@example.com"
    assert event["actorExternalID"] == "e-bca5454"
    assert event["actorName"] == "Alice Glick"
    assert event["ipAddress"] == "203.0.113.9"
    assert event["userAgent"] == "strongdm-sdk-python/18.4.0"
    # Log Stream's entities are ids; the details live under their own key.
    assert event["entities"] == ["a-0abcdabcdab00002", "rs-0123456789abcdef"]
    assert event["entityDetails"][0] == {
        "id": "a-0abcdabcdab00002",
        "type": "user",
        "name": "Bob Example",
        "email": "bob@example.com",
        "externalId": "okta|00u1abcd",
    }


def test_activity_mapping_covers_every_field_of_the_record() -> None:
    """A field added to Activity, ActivityActor or ActivityEntity by a new SDK fails here."""
    import strongdm.activities_pb2 as pb

    handled = {
        "v1.Activity": {
            "id",
            "verb",
            "description",
            "completed_at",
            "entities",
            "ip_address",
            "actor",
            "user_agent",
        },
        "v1.ActivityActor": {"id", "email", "first_name", "last_name", "activity_external_id"},
        "v1.ActivityEntity": {"id", "type", "name", "email", "external_id"},
    }
    for message in (pb.Activity, pb.ActivityActor, pb.ActivityEntity):
        descriptor = message.DESCRIPTOR
        assert {f.name for f in descriptor.fields} == handled[descriptor.full_name]


@pytest.mark.parametrize(
    ("first", "last", "name"),
    [("Alice", "Glick", "Alice Glick"), ("svc-backup", "", "svc-backup"), ("", "", "")],
)
def test_actor_name_joins_the_parts_that_exist(first: str, last: str, name: str) -> None:
    record = samples.sample("activities")
    record.actor.first_name = first  # type: ignore[attr-defined]
    record.actor.last_name = last  # type: ignore[attr-defined]
    assert to_event(STREAMS["activities"], record)["actorName"] == name


def test_query_keeps_every_field_under_its_camel_case_name() -> None:
    spec = STREAMS["queries"]
    event = to_event(spec, samples.sample("queries"))
    renamed = {"id": "queryId", "duration": "durationMs"}
    for field in spec.record_class.DESCRIPTOR.fields:
        assert renamed.get(field.name, field.json_name) in event, field.name
    extra = {"logType", "formatVersion", "id", "queryState"}
    assert len(event) == len(spec.record_class.DESCRIPTOR.fields) + len(extra)
    assert event["authzJson"] == '{"policies":["deny-prod-writes"],"decision":"allow"}'
    assert event["durationMs"] == 12  # 12.345678 ms, floored
    assert event["recordCount"] == 1
    assert event["resourceTags"] == {"env": "prod", "team": "data platform"}
    assert event["initiator"] == {"type": "human", "aiAgent": "", "version": "", "trusted": True}
    assert event["capture"] is None


def test_long_running_query_start_and_completion_are_two_events() -> None:
    spec = STREAMS["queries"]
    start, done = samples.query_pair()
    started, completed = to_event(spec, start), to_event(spec, done)
    assert started["id"] == spec.record_key(start) == "s2LongRunningSshSession0001:start"
    assert completed["id"] == spec.record_key(done) == "s2LongRunningSshSession0001"
    assert started["queryId"] == completed["queryId"] == "s2LongRunningSshSession0001"
    assert (started["queryState"], completed["queryState"]) == ("started", "completed")
    assert started["completedAt"] is None and started["durationMs"] is None
    assert completed["completedAt"] == "2024-05-01T13:30:00.500000000Z"
    assert completed["durationMs"] == 16_199_499
    # Both carry the start time, the stream's time field.
    assert started["timestamp"] == completed["timestamp"] == "2024-05-01T09:00:00.000000001Z"
    capture = started["capture"]
    assert capture["env"] == {"TERM": "xterm-256color", "LANG": "en_US.UTF-8"}
    assert capture["requestBody"] == "aGVsbG8="  # bytes as base64
    assert capture["impersonationGroups"] == ["ops"]


@pytest.mark.parametrize("stream", [s.name for s in STREAMS.values() if s.kind is StreamKind.HISTORY])
def test_history_keeps_every_field_of_record_and_entity(stream: str) -> None:
    spec = STREAMS[stream]
    event = to_event(spec, samples.sample(stream))
    record_fields = spec.record_class.DESCRIPTOR.fields
    assert {compiled.event_key(f) for f in record_fields} | {"logType", "formatVersion", "id"} == set(event)
    assert event["activityId"] == samples.ACTIVITY_ID
    entity_key = history_entity_key(spec)
    assert spec.entity_field is not None
    entity_descriptor = spec.record_class.DESCRIPTOR.fields_by_name[spec.entity_field].message_type
    entity = event[entity_key]
    if compiled.is_polymorphic(entity_descriptor):
        member = getattr(samples.sample(stream), spec.entity_field).WhichOneof(
            entity_descriptor.oneofs[0].name
        )
        assert entity["type"] == member
        entity_descriptor = entity_descriptor.fields_by_name[member].message_type
        entity = {k: v for k, v in entity.items() if k != "type"}
    assert set(entity) == {compiled.event_key(f) for f in entity_descriptor.fields}
    if "deleted_at" in spec.record_class.DESCRIPTOR.fields_by_name:
        assert event["deletedAt"] == samples.DELETED.get(stream)
    else:
        assert stream == "organization_history" and "deletedAt" not in event


def test_history_values_are_converted_by_kind() -> None:
    event = to_event(STREAMS["access_requests_history"], samples.sample("access_requests_history"))
    request = event["accessRequest"]
    assert request["validUntil"] == "2024-05-01T16:00:00.000000001Z"
    assert request["duration"] == 240  # an int64 field, not a Duration
    assert request["requestedDurationMs"] == 14_400_000
    assert request["resultDurationMs"] == 14_400_000  # 14400.0005 s, floored to ms

    org = to_event(STREAMS["organization_history"], samples.sample("organization_history"))["organization"]
    assert org["idleTimeoutMs"] == 3_600_000
    assert org["logConfig"]["categories"] == {
        "ssh": {"remoteEncoder": "strongdm", "remoteDiscardReplays": False},
        "queries": {"remoteEncoder": "pubkey", "remoteDiscardReplays": True},
    }
    steps = to_event(STREAMS["approval_workflows_history"], samples.sample("approval_workflows_history"))
    first_step = steps["approvalWorkflow"]["approvalWorkflowSteps"][0]
    assert first_step["skipAfterMs"] == 1_800_500
    assert first_step["approvers"][1] == {
        "accountId": "",
        "roleId": "r-0fedcba987654321",
        "reference": "",
        "groupId": "",
    }
    user = to_event(STREAMS["accounts_history"], samples.sample("accounts_history"))["account"]
    assert user["type"] == "user" and user["tags"] == {"env": "prod", "team": "data platform"}
    assert (
        user["suspendedRO"] is True and user["permissionLevelRW"] == "database-admin" and user["SCIM"] == "{}"
    )
    role = to_event(STREAMS["roles_history"], samples.sample("roles_history"))["role"]
    assert role["scope"] == {"type": "agents", "agents": ["claude-code", "codex"]}


def test_unset_nested_message_is_null_and_unset_tags_empty() -> None:
    spec = STREAMS["roles_history"]
    record = spec.record_class(activity_id="x")
    record.role.id = "r-1"
    event = to_event(spec, record)
    assert event["timestamp"] is None and event["deletedAt"] is None
    assert event["role"]["scope"] is None
    assert event["role"]["tags"] == {}


def _all_resource_members() -> list[str]:
    return [
        f.name
        for f in STREAMS["resources_history"]
        .record_class.DESCRIPTOR.fields_by_name["resource"]
        .message_type.fields
    ]


@pytest.mark.parametrize(
    "stream", ["resources_history", "nodes_history", "secret_stores_history", "accounts_history"]
)
def test_every_polymorphic_member_converts(stream: str) -> None:
    """All 119 resource types (and every node, secret store, account type) compile and flatten."""
    spec = STREAMS[stream]
    field = spec.entity_field
    assert field is not None
    wrapper = spec.record_class.DESCRIPTOR.fields_by_name[field].message_type
    for member in wrapper.fields:
        record = spec.record_class(activity_id="act")
        getattr(getattr(record, field), member.name).id = f"{member.name}-1"
        event = to_event(spec, record)
        entity = event[history_entity_key(spec)]
        assert entity["type"] == member.name
        assert entity["id"] == f"{member.name}-1"
        assert len(entity) == len(member.message_type.fields) + 1


def test_ai_router_node_converts() -> None:
    """The SDK's own porcelain cannot convert Node.ai_router; we must not choke on it."""
    spec = STREAMS["nodes_history"]
    record = spec.record_class(activity_id="act")
    record.node.ai_router.id = "n-ai"
    record.node.ai_router.address = "router.example.com:443"
    entity = to_event(spec, record)["node"]
    assert entity["type"] == "ai_router" and entity["address"] == "router.example.com:443"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def test_unknown_oneof_member_from_a_newer_server() -> None:
    spec = STREAMS["resources_history"]
    # Field 3 (resource) holding only field 9999 (a resource type this SDK has never heard of).
    unknown_member = _varint(9999 << 3 | 2) + b"\x02\x0a\x00"  # LEN 2: {1: ""}
    wire = b"\x0a\x03act" + b"\x1a" + bytes([len(unknown_member)]) + unknown_member
    record = spec.record_class.FromString(wire)
    assert record.resource.WhichOneof("resource") is None
    assert to_event(spec, record)["resource"] == {"type": compiled.UNKNOWN_MEMBER}


def _reachable(descriptor: Descriptor, seen: dict[str, Descriptor]) -> None:
    if descriptor.full_name in seen:
        return
    seen[descriptor.full_name] = descriptor
    for field in descriptor.fields:
        if field.message_type is not None:
            _reachable(field.message_type, seen)


def test_every_reachable_message_type_compiles_without_key_collisions() -> None:
    seen: dict[str, Descriptor] = {}
    for spec in STREAMS.values():
        _reachable(spec.record_class.DESCRIPTOR, seen)
    pool = descriptor_pool.Default()
    for name in seen:
        descriptor = pool.FindMessageTypeByName(name)
        if descriptor.GetOptions().map_entry:
            continue
        converter = compiled.converter_for(descriptor)
        from google.protobuf import message_factory

        instance = message_factory.GetMessageClass(descriptor)()
        converted = converter(instance)
        assert isinstance(converted, dict)
    assert len(seen) > 200


# --- shared value helpers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "nanos", "text"),
    [
        (0, 1, "1970-01-01T00:00:00.000000001Z"),
        (1_714_566_896, 123_456_789, "2024-05-01T12:34:56.123456789Z"),
        (-1, 999_999_999, "1969-12-31T23:59:59.999999999Z"),
        (-62_135_596_800, 0, "0001-01-01T00:00:00.000000000Z"),
        (253_402_300_799, 999_999_999, "9999-12-31T23:59:59.999999999Z"),
        (10, 1_500_000_000, "1970-01-01T00:00:11.500000000Z"),  # nanos normalised
        (10, -1, "1970-01-01T00:00:09.999999999Z"),
    ],
)
def test_rfc3339(seconds: int, nanos: int, text: str) -> None:
    assert protovalues.rfc3339(seconds, nanos) == text


def test_rfc3339_outside_year_range_keeps_the_value() -> None:
    assert protovalues.rfc3339(253_402_300_800, 5) == "invalid-timestamp:253402300800s5ns"
    assert protovalues.epoch_ms("invalid-timestamp:253402300800s5ns") is None


@given(st.integers(min_value=-62_135_596_800, max_value=253_402_300_799), st.integers(0, 999_999_999))
def test_rfc3339_matches_datetime_and_parses_back(seconds: int, nanos: int) -> None:
    text = protovalues.rfc3339(seconds, nanos)
    expected = dt.datetime(1970, 1, 1) + dt.timedelta(seconds=seconds)
    assert text == expected.strftime("%Y-%m-%dT%H:%M:%S").rjust(19, "0") + f".{nanos:09d}Z"
    assert protovalues.epoch_ms(text) == seconds * 1000 + nanos // 1_000_000


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2024-05-01T12:34:56Z", 1_714_566_896_000),
        ("2024-05-01T12:34:56.5Z", 1_714_566_896_500),
        ("2024-05-01T14:34:56.123+02:00", 1_714_566_896_123),
        ("not a time", None),
        (None, None),
        ("hmac-sha256:00", None),
    ],
)
def test_epoch_ms_of_other_rfc3339_forms(text: Any, ms: int | None) -> None:
    assert protovalues.epoch_ms(text) == ms


def test_tags_are_fresh_dicts() -> None:
    record = samples.sample("queries")
    first = protovalues.tags(record.resource_tags)  # type: ignore[attr-defined]
    first["env"] = "changed by a consumer"
    assert protovalues.tags(record.resource_tags)["env"] == "prod"  # type: ignore[attr-defined]


def test_duration_is_floored_to_whole_milliseconds() -> None:
    from google.protobuf.duration_pb2 import Duration

    assert protovalues.duration_ms(Duration(seconds=1, nanos=999_999)) == 1000
    assert protovalues.duration_ms(Duration(seconds=0, nanos=1)) == 0
    assert protovalues.duration_ms(Duration()) is None


def test_maps_are_emitted_in_key_order() -> None:
    """upb's map iteration order varies between runs: events must not."""
    spec = STREAMS["queries"]
    one, _ = samples.query_pair()
    two, _ = samples.query_pair()
    keys = [f"VAR_{i}" for i in range(50)]
    one.capture.env.clear()  # type: ignore[attr-defined]
    two.capture.env.clear()  # type: ignore[attr-defined]
    for key in keys:
        one.capture.env[key] = key  # type: ignore[attr-defined]
    for key in reversed(keys):
        two.capture.env[key] = key  # type: ignore[attr-defined]
    env = to_event(spec, one)["capture"]["env"]
    assert list(env) == sorted(keys)
    assert list(to_event(spec, two)["capture"]["env"]) == sorted(keys)
