"""Activities read through the flattened type (``wire``) equal a plain attribute read.

The activity converter parses the serialized record into a copy of its type whose actor and
entities are bytes, and caches their converted forms under those bytes. This checks the
result against the obvious attribute-by-attribute conversion on varied records (unset
actor, unset time, no entities, repeated and changed entities, any text), twice so cached
forms are used, and that events never share their lists and dicts.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditstream.formats import to_event, wire
from auditstream.formats.protovalues import timestamp
from auditstream.sdm.registry import STREAMS

SPEC = STREAMS["activities"]
words = st.one_of(
    st.sampled_from(["", "alice", "bob@example.com", "prod-db", "é中🎉", "a=b\n"]), st.text(max_size=12)
)
entity = st.fixed_dictionaries(
    {
        "id": words,
        "type": st.sampled_from(["", "user", "datasource", "node", "role"]),
        "name": words,
        "email": words,
        "external_id": words,
    }
)
actor = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {"id": words, "email": words, "first_name": words, "last_name": words, "activity_external_id": words}
    ),
)


def expected(record: Any) -> dict[str, Any]:
    """The attribute-by-attribute conversion the flat path must reproduce."""
    a = record.actor
    first, last = a.first_name, a.last_name
    details = [
        {"id": e.id, "type": e.type, "name": e.name, "email": e.email, "externalId": e.external_id}
        for e in record.entities
    ]
    return {
        "logType": "activities",
        "formatVersion": "v1.0.0",
        "id": record.id,
        "timestamp": timestamp(record.completed_at),
        "activity": record.verb,
        "actorAccountID": a.id,
        "actorEmail": a.email,
        "actorExternalID": a.activity_external_id,
        "actorFirstName": first,
        "actorLastName": last,
        "actorName": f"{first} {last}" if first and last else first or last,
        "description": record.description,
        "entities": [d["id"] for d in details],
        "entityDetails": details,
        "ipAddress": record.ip_address,
        "userAgent": record.user_agent,
    }


@given(
    words,
    words,
    st.one_of(st.none(), st.tuples(st.integers(-(2**40), 2**40), st.integers(0, 999_999_999))),
    st.lists(entity, max_size=4),
    actor,
    words,
)
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_flat_read_equals_attribute_read(
    record_id: str,
    verb: str,
    time: tuple[int, int] | None,
    entities: list[dict[str, str]],
    who: Any,
    text: str,
) -> None:
    record = SPEC.record_class(id=record_id, verb=verb, description=text, ip_address=text, user_agent=verb)
    if time is not None:
        record.completed_at.seconds, record.completed_at.nanos = time
    for fields in entities:
        record.entities.add(**fields)
    if who is not None:
        record.actor.CopyFrom(type(record.actor)(**who))
    want = expected(record)
    assert to_event(SPEC, record) == want
    again = to_event(SPEC, record)  # from the caches this time
    assert again == want


def test_events_never_share_containers() -> None:
    record = SPEC.record_class(id="x", verb="v")
    record.entities.add(id="a-1", type="user", name="Bob")
    first, second = to_event(SPEC, record), to_event(SPEC, record)
    assert first["entityDetails"] is not second["entityDetails"]
    assert first["entityDetails"][0] is not second["entityDetails"][0]
    assert first["entities"] is not second["entities"]
    first["entityDetails"][0]["name"] = "changed by a consumer"
    first["entities"].append("a-2")
    assert to_event(SPEC, record)["entityDetails"][0]["name"] == "Bob"
    assert to_event(SPEC, record)["entities"] == ["a-1"]


def test_flat_class_refuses_what_it_cannot_flatten() -> None:
    descriptor = SPEC.record_class.DESCRIPTOR
    with pytest.raises(ValueError, match="not a message field"):
        wire.flat_class(descriptor, ("verb",))
    with pytest.raises(ValueError, match="cannot be kept"):
        wire.flat_class(descriptor, ("entities",))  # actor would stay a message of a foreign type
