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
