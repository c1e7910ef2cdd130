"""The official SDK, unmodified, as the client: the strongest evidence of wire fidelity."""

from __future__ import annotations

import base64
import datetime as dt
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import strongdm
from strongdm import plumbing

from auditstream.emulator import Emulator
from auditstream.emulator.data.entities import SDK_UNCONVERTIBLE
from auditstream.sdm.registry import SERVED_STREAM_NAMES, STREAMS, StreamKind

from .oracle import decrypt_chunk_events, load_private_key

UTC = dt.UTC


def sdk_client(emu: Emulator, secret: str | None = None, **kwargs: object) -> strongdm.Client:
    return strongdm.Client(
        emu.options.access_key, secret or emu.options.secret_key, host=emu.address, insecure=True, **kwargs
    )


def _from_ns(ns: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ns // 1_000_000_000, UTC).replace(microsecond=(ns // 1000) % 1_000_000)


def sdk_listing(client: strongdm.Client, stream: str, filter_text: str = "", *args: object) -> list[Any]:
    """The SDK's own call for a stream: ``<attr>.list``, or ``managed_secrets.logs``."""
    if STREAMS[stream].kind is StreamKind.SECRET_LOG:
        return list(client.managed_secrets.logs(filter_text, *args))
    return list(getattr(client, stream).list(filter_text, *args))


def test_every_stream_lists_exactly_its_records(threaded_emulator_factory: Callable[..., Emulator]) -> None:
    emu = threaded_emulator_factory(records=120, long_sessions=3, long_session_close_within=3600)
    client = sdk_client(emu)
    assert len(SERVED_STREAM_NAMES) == 29  # activities, queries, 26 histories, managed secret logs
    for name in SERVED_STREAM_NAMES:
        got = sdk_listing(client, name)
        truth = emu.truth(name)
        assert len(got) == len(truth) > 0, name
        if STREAMS[name].kind is StreamKind.HISTORY:
            assert Counter(r.activity_id for r in got) == Counter(key.split(":", 1)[0] for key, _ in truth), (
                name
            )
        elif name in ("activities", "managed_secret_logs"):
            assert {r.id for r in got} == {key for key, _ in truth}
        else:  # queries: an open start record and its completion share one id
            keys = Counter(r.id if r.completed_at is not None else f"{r.id}:start" for r in got)
            assert keys == Counter(key for key, _ in truth)


@pytest.mark.parametrize("stream", ["activities", "queries"])
def test_time_filter_with_sdk_placeholders(
    threaded_emulator_factory: Callable[..., Emulator], stream: str
) -> None:
    """``list("after:? before:?", dt1, dt2)`` sends ``str(datetime)``: the emulator parses it."""
    emu = threaded_emulator_factory(records=300)
    truth = sorted(emu.filter_truth(stream), key=lambda kt: kt[1])
    after, before = _from_ns(truth[len(truth) // 3][1]), _from_ns(truth[2 * len(truth) // 3][1])
    after_ns = int(after.timestamp()) * 1_000_000_000 + after.microsecond * 1000
    before_ns = int(before.timestamp()) * 1_000_000_000 + before.microsecond * 1000
    expected = {key for key, t in truth if after_ns <= t < before_ns}  # defaults: [after, before)
    got = list(getattr(sdk_client(emu), stream).list("after:? before:?", after, before))
    if stream == "activities":
        keys = {r.id for r in got}
    else:
        keys = {r.id if r.completed_at is not None else f"{r.id}:start" for r in got}
    assert keys == expected
    assert 50 < len(expected) < 150


def test_wrong_secret_is_an_authentication_error(threaded_emulator_factory: Callable[..., Emulator]) -> None:
    emu = threaded_emulator_factory(records=10)
    wrong = base64.b64encode(b"not the secret").decode()
    with pytest.raises(strongdm.errors.AuthenticationError):
        list(sdk_client(emu, secret=wrong).activities.list(""))
    assert emu.stats.unauthenticated == 1


def test_rate_limit_is_a_rate_limit_error_with_reset_at(
    threaded_emulator_factory: Callable[..., Emulator],
) -> None:
    emu = threaded_emulator_factory(records=10, rate_limit=3)
    client = sdk_client(emu, retry_rate_limit_errors=False)
    for _ in range(3):
        list(client.roles_history.list(""))
    with pytest.raises(strongdm.errors.RateLimitError) as caught:
        list(client.roles_history.list(""))
    info = caught.value.rate_limit
    assert info.limit == 3 and info.remaining == 0 and info.bucket == "read"
    assert info.reset_at is not None and info.reset_at > dt.datetime.now(UTC)
    assert emu.stats.rate_limited == 1


def test_hostile_strings_survive_the_sdk(threaded_emulator_factory: Callable[..., Emulator]) -> None:
    emu = threaded_emulator_factory(records=400, hostile=True)
    client = sdk_client(emu)
    descriptions = [a.description for a in client.activities.list("")]
    bodies = [q.query_body for q in client.queries.list("")]
    text = "".join(descriptions + bodies)
    for needle in ("|", "\\", "=", '"', "]", "\n", "\r", "🚀", "\u202e"):
        assert needle in text, repr(needle)
    assert max(len(s) for s in descriptions + bodies) > 10_000
    assert len(list(client.accounts_history.list(""))) == len(emu.truth("accounts_history"))


def test_no_entity_uses_a_oneof_member_the_sdk_cannot_convert() -> None:
    """Guards SDK_UNCONVERTIBLE against SDK upgrades: it must list exactly the failing members."""
    converters = {
        "v1.Account": plumbing.convert_account_to_porcelain,
        "v1.Node": plumbing.convert_node_to_porcelain,
        "v1.Resource": plumbing.convert_resource_to_porcelain,
        "v1.SecretStore": plumbing.convert_secret_store_to_porcelain,
    }
    failing: dict[str, set[str]] = {}
    for spec in STREAMS.values():
        if spec.entity_field is None:
            continue
        entity_desc = spec.record_class.DESCRIPTOR.fields_by_name[spec.entity_field].message_type
        if entity_desc.full_name not in converters:
            assert not entity_desc.oneofs, f"{entity_desc.full_name}: a polymorphic entity without a check"
            continue
        for member in entity_desc.oneofs[0].fields:
            entity = entity_desc._concrete_class()
            getattr(entity, member.name).SetInParent()
            try:
                converters[entity_desc.full_name](entity)
            except Exception:
                failing.setdefault(entity_desc.full_name, set()).add(member.name)
    assert failing == {k: set(v) for k, v in SDK_UNCONVERTIBLE.items()}


# --- Replays.List and ManagedSecrets.Logs --------------------------------------------------


def test_the_sdk_lists_a_sessions_replay(threaded_emulator_factory: Callable[..., Emulator]) -> None:
    emu = threaded_emulator_factory(records=200)
    sessions = sorted(emu.replayable_query_ids())
    assert sessions
    for page_limit in (0, 2):  # the SDK's default page, then pages of two chunks
        client = sdk_client(emu, page_limit=page_limit)
        for qid in sessions[:5]:
            chunks = list(client.replays.list("id:?", qid))
            got = [[(e.data, round(e.duration.total_seconds() * 1000)) for e in c.events] for c in chunks]
            assert got == emu.replay_events(qid), (qid, page_limit)
            assert all(not c.data and not c.symmetric_key for c in chunks)
    client = sdk_client(emu)
    assert list(client.replays.list("id:?", "s-0000000000000000")) == []
    with pytest.raises(strongdm.errors.BadRequestError):
        list(client.replays.list(""))


def test_the_sdk_reads_an_encrypted_sessions_chunks(
    threaded_emulator_factory: Callable[..., Emulator],
) -> None:
    emu = threaded_emulator_factory(records=300, encrypted_fraction=1.0)
    key = load_private_key(emu.log_private_key_pem)
    qid = min(emu.replayable_query_ids())
    chunks = list(sdk_client(emu).replays.list("id:?", qid))
    assert chunks and all(not c.events and c.data and c.symmetric_key for c in chunks)
    assert [decrypt_chunk_events(key, c) for c in chunks] == emu.replay_events(qid)


def test_the_sdk_lists_managed_secret_logs(threaded_emulator_factory: Callable[..., Emulator]) -> None:
    emu = threaded_emulator_factory(records=1000)
    client = sdk_client(emu)
    logs = list(client.managed_secrets.logs(""))
    assert {r.id for r in logs} == emu.all_keys("managed_secret_logs") and len(logs) == 100
    truth = sorted(emu.filter_truth("managed_secret_logs"), key=lambda kt: kt[1])
    after, before = _from_ns(truth[20][1]), _from_ns(truth[80][1])
    after_ns = int(after.timestamp()) * 1_000_000_000 + after.microsecond * 1000
    before_ns = int(before.timestamp()) * 1_000_000_000 + before.microsecond * 1000
    expected = {key for key, t in truth if after_ns <= t < before_ns}
    assert {r.id for r in client.managed_secrets.logs("after:? before:?", after, before)} == expected
    assert 40 < len(expected) < 80


def test_refused_secret_log_time_filters_are_bad_requests(
    threaded_emulator_factory: Callable[..., Emulator],
) -> None:
    emu = threaded_emulator_factory(records=300, secret_logs_time_filter="refused")  # the flag's spelling
    client = sdk_client(emu)
    with pytest.raises(strongdm.errors.BadRequestError, match="cannot be filtered on 'after'"):
        list(client.managed_secrets.logs("after:?", dt.datetime(2024, 1, 1, tzinfo=UTC)))
    with pytest.raises(strongdm.errors.BadRequestError):
        list(client.managed_secrets.logs("before:?", dt.datetime.now(UTC)))
    assert {r.id for r in client.managed_secrets.logs("")} == emu.all_keys("managed_secret_logs")
