"""JSON: every event round-trips through orjson and stays one line, whatever the strings."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditstream.formats import encode_json, to_event
from auditstream.sdm.registry import STREAMS
from tests.formats import samples

text = st.text(st.characters(codec="utf-8"), max_size=40)
hostile = st.one_of(
    text,
    st.lists(
        st.sampled_from(['"', "\\", "\n", "\r", "\u2028", "\x00", "\x1f", "é", "🎉", "|", "="]), max_size=20
    ).map("".join),
    st.builds(lambda s, n: (s or "x") * n, text, st.integers(1000, 5000)),
)


def _roundtrip(event: dict[str, Any]) -> None:
    encoded = encode_json(event)
    assert b"\n" not in encoded and b"\r" not in encoded and not encoded.endswith(b"\n")
    assert orjson.loads(encoded) == event
    encoded.decode("utf-8")  # strict UTF-8


@given(hostile, hostile, hostile, hostile)
@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
def test_activity_json_roundtrip(verb: str, description: str, email: str, entity: str) -> None:
    record = samples.sample("activities")
    record.verb, record.description = verb, description  # type: ignore[attr-defined]
    record.actor.email = email  # type: ignore[attr-defined]
    record.entities[0].name = entity  # type: ignore[attr-defined]
    event = to_event(STREAMS["activities"], record)
    assert (event["activity"], event["description"], event["actorEmail"]) == (verb, description, email)
    _roundtrip(event)


@given(hostile, hostile, hostile, st.binary(max_size=64), st.dictionaries(text, hostile, max_size=4))
@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
def test_query_json_roundtrip(
    body: str, tag: str, authz: str, request_body: bytes, env: dict[str, str]
) -> None:
    record, _ = samples.query_pair()
    record.query_body = body  # type: ignore[attr-defined]
    record.authzJson = authz  # type: ignore[attr-defined]
    pair = record.resource_tags.pairs.add()  # type: ignore[attr-defined]
    pair.name, pair.value = "hostile", tag
    record.capture.request_body = request_body  # type: ignore[attr-defined]
    record.capture.env.clear()  # type: ignore[attr-defined]
    record.capture.env.update(env)  # type: ignore[attr-defined]
    event = to_event(STREAMS["queries"], record)
    assert event["queryBody"] == body and event["resourceTags"]["hostile"] == tag
    assert event["capture"]["env"] == env
    _roundtrip(event)


@given(hostile, hostile)
@settings(max_examples=50, suppress_health_check=[HealthCheck.too_slow])
def test_history_json_roundtrip(name: str, password: str) -> None:
    record = samples.sample("resources_history")
    record.resource.postgres.name = name  # type: ignore[attr-defined]
    record.resource.postgres.password = password  # type: ignore[attr-defined]
    event = to_event(STREAMS["resources_history"], record)
    assert event["resource"]["name"] == name
    _roundtrip(event)


def test_every_sample_roundtrips() -> None:
    for stream, record in samples.all_samples().items():
        _roundtrip(to_event(STREAMS[stream], record))


@given(hostile, hostile)
@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
def test_line_encoders_end_every_event_in_exactly_one_newline(verb: str, description: str) -> None:
    from auditstream.formats import make_encoder, make_line_encoder

    record = samples.sample("activities")
    record.verb, record.description = verb, description  # type: ignore[attr-defined]
    event = to_event(STREAMS["activities"], record)
    for fmt in ("json", "cef"):
        line = make_line_encoder(fmt)(event)  # type: ignore[arg-type]
        assert line.endswith(b"\n") and line.count(b"\n") == 1, fmt
        assert line[:-1] == make_encoder(fmt)(event), "the same encoding, plus the newline"  # type: ignore[arg-type]
    assert orjson.loads(make_line_encoder("json")(event)) == event


def test_an_encoded_event_takes_about_its_length_in_memory() -> None:
    """A sink holds every event's encoding until the receiver acknowledges it: orjson's own
    output sits in a buffer of at least 4 kB (8 kB for an activity of 900 bytes), which made
    a backfill's pending events take ten times the memory their bytes need."""
    import tracemalloc

    from auditstream.formats import make_encoder, make_line_encoder

    event = to_event(STREAMS["activities"], samples.sample("activities"))
    for encode in (make_encoder("json"), make_line_encoder("json")):
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            held = [encode(event) for _ in range(200)]
            used = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        length = sum(len(data) for data in held)
        per_event = f"{used / 200:.0f} bytes held per {length / 200:.0f}-byte encoding"
        assert used < 1.5 * length + 200 * 64, per_event
