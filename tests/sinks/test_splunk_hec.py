"""The splunk_hec sink against our HEC receiver, row by row through the code table, with
indexer acknowledgement and delivery under faults."""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import logging
import uuid
from typing import Any

import pytest

from auditstream.ops import secrets
from auditstream.ops.secrets import REDACTED
from auditstream.sinks.base import SinkFatalError, SinkState
from auditstream.sinks.splunk_hec import SplunkHecSink, SplunkHecSinkSettings
from tests.helpers import async_wait_until
from tests.peers.hec import HecReceiver
from tests.sinks.conftest import AWKWARD, FAST_RETRY, assert_delivered, envelopes, logged

TOKEN = "0f6b1c9e-token-SECRET-7731"


def settings(receiver: HecReceiver, **overrides: Any) -> HecSettings:
    config: dict[str, Any] = {
        "type": "splunk_hec",
        "name": "splunk",
        "url": receiver.base_url,
        "token": TOKEN,
        "retry": FAST_RETRY,
        "batch": {"max_events": 50, "max_age": 0},
        "timeout": 2,
    }
    config.update(overrides)
    return SplunkHecSinkSettings.model_validate(config)


HecSettings = SplunkHecSinkSettings


async def started(config: SplunkHecSinkSettings, state_dir) -> SplunkHecSink:
    sink = SplunkHecSink(config, state_dir=state_dir)
    await sink.start()
    return sink


def events_of(receiver: HecReceiver) -> list[list[dict[str, Any]]]:
    return [[envelope["event"] for envelope in request] for request in receiver.requests]


async def test_envelopes_carry_time_metadata_and_the_event(state_dir):
    async with HecReceiver(token=TOKEN) as receiver:
        config = settings(receiver, index="audit", sourcetype="strongdm:{stream}", host="bastion-1")
        sink = await started(config, state_dir)
        batch = envelopes("activities", 3)
        await sink.send(batch)
        await sink.close()
    first = receiver.events[0]
    assert first == {
        "time": 1714564800.123456,
        "host": "bastion-1",
        "source": "auditstream:activities",
        "sourcetype": "strongdm:activities",
        "index": "audit",
        "event": batch[0].event,
    }
    assert first["event"]["message"] == AWKWARD
    assert [e["event"]["id"] for e in receiver.events] == [e.key for e in batch]
    assert receiver.gzip_requests == 1


async def test_cef_events_are_strings(state_dir):
    async with HecReceiver(token=TOKEN) as receiver:
        sink = await started(settings(receiver, format="cef"), state_dir)
        await sink.send(envelopes("activities", 2))
        await sink.close()
    assert all(e["event"].startswith("CEF:0|") for e in receiver.events)


async def test_receiver_down_then_up_then_busy_then_slow(state_dir):
    receiver = HecReceiver(token=TOKEN)
    sink = await started(settings(receiver, timeout=0.4), state_dir)
    expected = []
    # down, then up
    first = envelopes("activities", 60)
    expected += first
    sending = asyncio.create_task(sink.send(first))
    await async_wait_until(lambda: sink.health().state is SinkState.RETRYING, what="retrying while down")
    await receiver.start()
    await sending
    # busy (503 code 9) for a while, two streams at once
    receiver.busy = True
    batches = [envelopes("queries", 40), envelopes("activities", 40, start=60)]
    expected += batches[0] + batches[1]
    sending = asyncio.gather(*(sink.send(b) for b in batches))
    await async_wait_until(lambda: receiver.attempts >= 6, what="retries while busy")
    receiver.busy = False
    await sending
    # slow: accepted, but answered after our timeout
    receiver.faults.delay_after_accept = 0.8
    slow = envelopes("queries", 10, start=40)
    expected += slow
    sending = asyncio.create_task(sink.send(slow))
    attempts = receiver.attempts
    await async_wait_until(lambda: receiver.attempts >= attempts + 2, what="a retry after a slow answer")
    receiver.faults.delay_after_accept = 0
    await sending
    await sink.close()
    await receiver.stop()
    assert_delivered(events_of(receiver), expected)
    assert sink.health().state is SinkState.OK


async def test_code_6_dead_letters_only_the_bad_event(state_dir):
    async with HecReceiver(token=TOKEN) as receiver:
        receiver.reject_when = lambda envelope: envelope["event"].get("poison") is True
        sink = await started(settings(receiver), state_dir)
        batch = envelopes("activities", 3) + envelopes("activities", 1, start=3, poison=True)
        batch += envelopes("activities", 3, start=4)
        await sink.send(batch)
        await sink.close()
    assert [e["event"]["id"] for e in receiver.events] == [e.key for e in batch if e.key != "activities-3"]
    (line,) = [json.loads(x) for x in (state_dir / "dead-letter" / "splunk.jsonl").read_text().splitlines()]
    assert line["key"] == "activities-3" and "code 6" in line["reason"]
    assert json.loads(line["event"])["event"]["poison"] is True


@pytest.mark.parametrize("fault", ["wrong", "disabled", "scheme"])
async def test_bad_token_stops_loudly_keeps_data_and_never_leaks(state_dir, caplog, capsys, fault):
    caplog.set_level(logging.DEBUG)
    async with HecReceiver(token="other" if fault == "wrong" else TOKEN) as receiver:
        if fault == "disabled":
            receiver.disabled_tokens.add(TOKEN)
        sink = await started(settings(receiver), state_dir)
        if fault == "scheme":
            sink.transport._headers["Authorization"] = f"Bearer {TOKEN}"  # type: ignore[attr-defined]
        batch = envelopes("activities", 5)
        with pytest.raises(SinkFatalError) as failure:
            await sink.send(batch)
        assert receiver.attempts == 1, "a bad token must not be retried in a loop"
        assert sink.health().state is SinkState.FAILED
        assert not (state_dir / "dead-letter").exists()
        assert "fatally" in logged(caplog, capsys)
        # the operator fixes the token: the engine's next try delivers everything
        receiver.token = TOKEN
        receiver.disabled_tokens.clear()
        if fault == "scheme":
            sink.transport._headers["Authorization"] = f"Splunk {TOKEN}"  # type: ignore[attr-defined]
        await sink.send(batch)
        await sink.close()
    assert [e["event"]["id"] for e in receiver.events] == [e.key for e in batch]
    for text in (
        str(failure.value),
        sink.health().last_error,
        repr(sink),
        repr(sink.settings),
        logged(caplog, capsys),
    ):
        assert TOKEN not in (text or "")


async def test_incorrect_index_is_a_configuration_error(state_dir):
    async with HecReceiver(token=TOKEN) as receiver:
        receiver.indexes = {"main"}
        sink = await started(settings(receiver, index="typo"), state_dir)
        with pytest.raises(SinkFatalError, match="Incorrect index"):
            await sink.send(envelopes("activities", 2))
        await sink.close()
    assert receiver.events == []


async def test_indexer_acknowledgement_and_resend_of_what_times_out(state_dir):
    async with HecReceiver(token=TOKEN, ack_enabled=True) as receiver:
        receiver.drop_next = 1  # first request: accepted, never indexed, ack never true
        config = settings(receiver, ack=True, ack_timeout=0.5, ack_poll_interval=0.05)
        sink = await started(config, state_dir)
        batch = envelopes("activities", 30)
        await sink.send(batch)
        await sink.send(envelopes("activities", 5, start=30))
        await sink.close()
    assert receiver.attempts == 3
    assert_delivered(events_of(receiver), envelopes("activities", 35), allow_retried_copies=False)
    assert receiver.channels == {sink.channel}
    uuid.UUID(sink.channel)


async def test_ack_on_a_token_without_acks_is_a_configuration_error(state_dir):
    async with HecReceiver(token=TOKEN, ack_enabled=False) as receiver:
        sink = await started(settings(receiver, ack=True), state_dir)
        with pytest.raises(SinkFatalError, match="ackId"):
            await sink.send(envelopes("activities", 1))
        await sink.close()


async def test_probe_uses_health_and_checks_the_token_without_sending_events(state_dir):
    async with HecReceiver(token=TOKEN) as receiver:
        assert (await SplunkHecSink(settings(receiver), state_dir=state_dir).probe()).ok
        bad = await SplunkHecSink(settings(receiver, token="nope"), state_dir=state_dir).probe()
        assert not bad.ok and "token" in bad.detail.lower()
        receiver.busy = True
        busy = await SplunkHecSink(settings(receiver), state_dir=state_dir).probe()
        assert not busy.ok and "503" in busy.detail
        assert receiver.events == []
    down = await SplunkHecSink(settings(receiver), state_dir=state_dir).probe()
    assert not down.ok


def test_url_may_be_given_with_the_collector_path_and_token_from_a_file(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    config = SplunkHecSinkSettings.model_validate(
        {"name": "s", "url": "https://splunk:8088/services/collector/event/", "token_file": str(token_file)}
    )
    assert config.url == "https://splunk:8088"
    assert config.token.get_secret_value() == TOKEN
    assert TOKEN not in repr(config)
    with pytest.raises(ValueError, match="GUID"):
        SplunkHecSinkSettings(name="s", url="https://splunk:8088", token=TOKEN, channel="not-a-guid")  # type: ignore[arg-type]


def delivery_counts(receiver: HecReceiver) -> collections.Counter[str]:
    return collections.Counter(envelope["event"]["id"] for envelope in receiver.events)


def dead_lettered(state_dir) -> list[dict[str, Any]]:
    path = state_dir / "dead-letter" / "splunk.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


BAD = {0, 1, 2, 57, 58, 250, 251, 252, 253, 498, 499}  # at the edges, adjacent, in runs


@pytest.mark.parametrize(
    ("receiver_kind", "ack", "most"),
    [
        # Splunk: names the first invalid event, has indexed those before it.
        ("splunk", False, 1),
        # With indexer acknowledgement the events before it are sent again to get an ackId.
        ("splunk", True, 2),
        # Says nothing about which event, has indexed those before it.
        ("unnamed", False, 2),
        # The OpenTelemetry Collector: says nothing, indexes nothing of a refused request.
        ("otel", False, 1),
    ],
)
async def test_code_6_with_k_bad_events_dead_letters_them_and_multiplies_nothing(
    state_dir, receiver_kind, ack, most
):
    """Measured before the fix: 4,824 good events arrived 62,481 times (13x), as the events
    before each bad one were sent again although Splunk had indexed them."""
    n = 500
    async with HecReceiver(token=TOKEN, ack_enabled=ack) as receiver:
        receiver.names_invalid_event = receiver_kind == "splunk"
        receiver.all_or_nothing = receiver_kind == "otel"
        receiver.reject_when = lambda envelope: envelope["event"]["seq"] in BAD
        overrides: dict[str, Any] = {"batch": {"max_events": n, "max_age": 0}}
        if ack:
            overrides |= {"ack": True, "ack_poll_interval": 0.01}
        sink = await started(settings(receiver, **overrides), state_dir)
        batch = envelopes("activities", n)
        await sink.send(batch)
        await sink.close()
    counts = delivery_counts(receiver)
    good = {e.key for e in batch if e.event["seq"] not in BAD}
    assert set(counts) == good, "every good event arrives, no bad one does"
    assert max(counts.values()) <= most, counts.most_common(3)
    lines = dead_lettered(state_dir)
    assert sorted(json.loads(line["event"])["event"]["seq"] for line in lines) == sorted(BAD)
    assert all("code 6" in line["reason"] for line in lines)
    if receiver_kind == "splunk":  # one request per bad event, plus the first (and ack's prefixes)
        assert receiver.refused == len(BAD)


async def test_a_wrong_url_is_fatal_and_dead_letters_nothing(state_dir):
    async with HecReceiver(token=TOKEN) as receiver:
        sink = await started(settings(receiver, url=receiver.base_url + "/no-such-prefix"), state_dir)
        with pytest.raises(SinkFatalError, match="404"):
            await sink.send(envelopes("activities", 5))
        await sink.close()
    assert not (state_dir / "dead-letter").exists()


async def test_an_echoing_hec_gets_no_token_into_health_dead_letters_probe_or_logs(
    state_dir, caplog, capsys, monkeypatch
):
    """HEC answers quote the Authorization header in ``text``. Nothing is registered
    process-wide: the sink scrubs its own token."""
    monkeypatch.setattr(secrets, "_REGISTRY", secrets.Secrets())
    caplog.set_level(logging.DEBUG)
    async with HecReceiver(token=TOKEN) as receiver:
        receiver.echo_authorization = True
        receiver.busy = True
        receiver.reject_when = lambda envelope: envelope["event"].get("poison") is True
        sink = await started(settings(receiver), state_dir)
        probe = await SplunkHecSink(settings(receiver, name="probe"), state_dir=state_dir).probe()
        batch = envelopes("activities", 2) + envelopes("activities", 1, start=2, poison=True)
        sending = asyncio.create_task(sink.send(batch))

        def echoed() -> str | None:
            error = sink.health().last_error or ""
            return error if "request had Authorization" in error else None

        health_error = await async_wait_until(echoed, 10, "a health error quoting the echo")
        receiver.busy = False
        await sending
        await sink.close()
    (line,) = dead_lettered(state_dir)
    assert "code 6" in line["reason"] and REDACTED in line["reason"]
    assert not probe.ok and REDACTED in probe.detail
    assert REDACTED in health_error
    token_b64 = base64.b64encode(TOKEN.encode()).decode()
    outputs = {
        "health": health_error,
        "dead letter": line["reason"],
        "probe": probe.detail,
        "logs": logged(caplog, capsys),
    }
    for where, text in outputs.items():
        assert TOKEN not in text and token_b64 not in text, where
