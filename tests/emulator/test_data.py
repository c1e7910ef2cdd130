"""The generated data: realistic, keyed as the registry keys it, seeded, at full precision."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from strongdm import constants

from auditstream.emulator import EmulatorOptions, TimePrecision
from auditstream.emulator.data.factory import DataFactory
from auditstream.emulator.data.hostile import HOSTILE_STRINGS
from auditstream.sdm.registry import SERVED_STREAM_NAMES, STREAMS, StreamKind

NANOS = 1_000_000_000
NOW = 1_790_000_000 * NANOS + 123_456_789


def records(name: str, **overrides: object) -> list[Any]:
    options = EmulatorOptions(**{"records": 300, **overrides})  # type: ignore[arg-type]
    spec = STREAMS[name]
    return [
        spec.record_class.FromString(row.payload) for row in DataFactory(options, NOW).initial_rows(name, NOW)
    ]


def constant_values(cls: type) -> set[str]:
    return {v for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, str)}


@pytest.mark.parametrize("name", SERVED_STREAM_NAMES)
def test_rows_are_keyed_and_timed_like_the_registry(name: str) -> None:
    options = EmulatorOptions(records=300)
    spec = STREAMS[name]
    rows = DataFactory(options, NOW).initial_rows(name, NOW)
    rarer = spec.kind in (StreamKind.HISTORY, StreamKind.SECRET_LOG)  # history_count records
    assert len(rows) == (30 if rarer else 300)
    assert len({row.key for row in rows}) == len(rows)
    for row in rows:
        record = spec.record_class.FromString(row.payload)
        assert spec.record_key(record) == row.key
        assert spec.record_time_ns(record) == row.time_ns
        assert NOW - 7 * 86400 * NANOS - 6 * 3600 * NANOS <= row.time_ns <= NOW


def test_activities_use_the_sdk_vocabulary() -> None:
    activities = records("activities", records=2000)
    verbs = Counter(a.verb for a in activities)
    assert set(verbs) <= constant_values(constants.ActivityVerb) and len(verbs) > 60
    types = {e.type for a in activities for e in a.entities}
    assert types <= constant_values(constants.ActivityEntityType) and len(types) > 10
    assert any(len(a.entities) > 1 for a in activities)
    for a in activities:
        assert a.id and a.ip_address and a.user_agent and a.description
        assert a.actor.id and a.actor.first_name
    with_email = [a for a in activities if a.actor.email]
    assert len(with_email) > len(activities) * 0.8
    assert all(a.actor.activity_external_id for a in with_email)


def test_queries_look_like_real_sessions() -> None:
    queries = records("queries", records=1500)
    by_category: dict[str, list[Any]] = {}
    for q in queries:
        by_category.setdefault(q.query_category, []).append(q)
    assert set(by_category) == constant_values(constants.QueryCategory) - {"all"}
    sql = [q for q in by_category["queries"] if q.resource_type == "postgres" and not q.encrypted]
    assert any(q.query_body.startswith(("SELECT", "UPDATE", "DELETE", "INSERT")) for q in sql)
    assert all(q.capture.type for q in by_category["ssh"])
    assert any(q.query_body.startswith("kubectl") and q.capture.pod for q in by_category["k8s"])
    assert all(q.capture.type.startswith("rdp") for q in by_category["rdp"])
    for q in queries:
        assert q.account_email and q.resource_name and q.source_ip and q.client_ip
        assert q.egress_node_id and q.authzJson and q.metadata_json and q.query_hash
    ids = Counter(q.id for q in queries)
    pairs = [i for i, n in ids.items() if n == 2]
    assert pairs, "no long-running session (two records) in the data"
    for query_id in pairs:
        start, end = sorted((q for q in queries if q.id == query_id), key=lambda q: q.completed_at.seconds)
        assert not start.HasField("completed_at") and not start.HasField("duration")
        assert start.timestamp == end.timestamp and end.duration.seconds >= 120
        assert start.query_category in ("ssh", "rdp", "k8s")


def test_history_entities_and_shared_activities() -> None:
    shared = 0
    for name, spec in STREAMS.items():
        if spec.kind is not StreamKind.HISTORY:
            continue
        history = records(name, history_records=200)
        shared += sum(n > 1 for n in Counter(h.activity_id for h in history).values())
        assert spec.entity_field is not None
        entities = [getattr(h, spec.entity_field) for h in history]
        assert all(e.ByteSize() for e in entities), name
        if "deleted_at" in spec.record_class.DESCRIPTOR.fields_by_name:
            deleted = sum(h.HasField("deleted_at") for h in history)
            assert 0 < deleted < len(history) / 3, name
        members = Counter(e.WhichOneof(e.DESCRIPTOR.oneofs[0].name) for e in entities if e.DESCRIPTOR.oneofs)
        if name == "accounts_history":
            assert {"user", "service"} <= set(members)
        if name == "nodes_history":
            assert set(members) == {"relay", "gateway", "proxy_cluster"}
        if name == "resources_history":
            assert {"postgres", "ssh", "kubernetes", "rdp", "mysql"} <= set(members)
    assert shared > 20, "no activity touched several entities"
    assert "deleted_at" not in STREAMS["organization_history"].record_class.DESCRIPTOR.fields_by_name


@pytest.mark.parametrize("precision", list(TimePrecision))
def test_timestamp_precision(precision: TimePrecision) -> None:
    times = [a.completed_at.ToNanoseconds() for a in records("activities", time_precision=precision)]
    if precision is TimePrecision.NS:
        assert all(t % 1000 for t in times)  # nanoseconds, never whole microseconds
    else:
        assert all(t % precision.quantum_ns == 0 for t in times)


def test_same_timestamp_groups() -> None:
    counts = Counter(a.completed_at.ToNanoseconds() for a in records("activities", same_timestamp=6))
    assert sorted(counts.values())[1:] == [6] * (len(counts) - 1)  # the last group may be partial


def test_seeded_and_reproducible() -> None:
    first = DataFactory(EmulatorOptions(records=100, seed=7), NOW).initial_rows("queries", NOW)
    again = DataFactory(EmulatorOptions(records=100, seed=7), NOW).initial_rows("queries", NOW)
    other = DataFactory(EmulatorOptions(records=100, seed=8), NOW).initial_rows("queries", NOW)
    assert first == again and first != other


def test_hostile_mode() -> None:
    text = "".join(a.description for a in records("activities", hostile=True))
    text += "".join(q.query_body for q in records("queries", hostile=True))
    assert sum(s in text for s in HOSTILE_STRINGS) > len(HOSTILE_STRINGS) * 0.7
    assert "\x00" not in text
    calm = "".join(a.description for a in records("activities"))
    assert not any(s in calm for s in ("|", "\n", "\r", "\u202e"))


def test_record_payloads_leave_room_in_the_memory_budget() -> None:
    """~1 KB per record in memory: serialized activities must stay well below that.

    (Build time and RSS at 1,000,000 records are measured by bench/bench_emulator.py.)
    """
    rows = DataFactory(EmulatorOptions(records=20_000), NOW).initial_rows("activities", NOW)
    assert sum(len(r.payload) for r in rows) / len(rows) < 600
