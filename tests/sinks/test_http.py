"""The http sink against a real aiohttp receiver: bodies, auth, gzip, TLS, status handling,
and delivery under faults (down then up, 503s with Retry-After, slow responses)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import time
from typing import Any

import pytest

from auditstream.ops import secrets
from auditstream.ops.secrets import REDACTED
from auditstream.sinks.base import SinkFatalError, SinkState
from auditstream.sinks.http import HttpSink, HttpSinkSettings
from tests.helpers import async_wait_until
from tests.peers.http_receiver import HttpReceiver
from tests.peers.tls import make_pki
from tests.sinks.conftest import AWKWARD, FAST_RETRY, assert_delivered, envelopes, logged

SECRET = "s3cr3t-Bearer-Value-42"


def settings(receiver: HttpReceiver, **overrides: Any) -> HttpSinkSettings:
    config: dict[str, Any] = {
        "type": "http",
        "name": "web",
        "url": receiver.url,
        "retry": FAST_RETRY,
        "batch": {"max_events": 50, "max_age": 0},
        "timeout": 2,
    }
    config.update(overrides)
    return HttpSinkSettings.model_validate(config)


async def started(config: HttpSinkSettings, state_dir) -> HttpSink:
    sink = HttpSink(config, state_dir=state_dir)
    await sink.start()
    return sink


async def test_ndjson_with_gzip_and_bearer_auth(state_dir):
    async with HttpReceiver(expected_auth=f"Bearer {SECRET}") as receiver:
        sink = await started(settings(receiver, auth="bearer", token=SECRET, gzip=True), state_dir)
        batch = envelopes("activities", 120)
        await sink.send(batch)
        await sink.close()
    assert receiver.items == [e.event for e in batch]
    assert receiver.items[0]["message"] == AWKWARD
    assert receiver.gzip_requests == len(receiver.requests) == 3
    assert set(receiver.content_types) == {"application/x-ndjson"}


async def test_json_array_with_basic_auth_and_cef(state_dir):
    expected = "Basic " + base64.b64encode(b"alice:pa55").decode()
    async with HttpReceiver(expected_auth=expected) as receiver:
        config = settings(receiver, auth="basic", username="alice", password="pa55", body="json_array")
        sink = await started(config, state_dir)
        await sink.send(envelopes("activities", 3))
        config = config.model_copy(update={"format": "cef", "name": "cef"})
        cef_sink = await started(config, state_dir)
        await cef_sink.send(envelopes("queries", 2))
        await sink.close()
        await cef_sink.close()
    assert [item["id"] for item in receiver.requests[0]] == [f"activities-{i}" for i in range(3)]
    assert all(isinstance(item, str) and item.startswith("CEF:0|") for item in receiver.requests[1])
    assert set(receiver.content_types) == {"application/json"}


async def test_receiver_down_then_up_loses_nothing(state_dir):
    receiver = HttpReceiver()
    sink = await started(settings(receiver), state_dir)
    first = envelopes("activities", 30)
    sending = asyncio.create_task(sink.send(first))
    await async_wait_until(lambda: sink.health().state is SinkState.RETRYING, what="sink retrying")
    await receiver.start()
    await sending
    more = envelopes("activities", 30, start=30)
    await sink.send(more)
    await receiver.stop()
    await sink.close()
    assert_delivered(receiver.requests, first + more)
    assert sink.health().state is SinkState.OK


async def test_503s_with_retry_after_are_honoured_and_order_is_kept(state_dir):
    async with HttpReceiver() as receiver:
        receiver.faults.fail_with.extend([503, 429])
        receiver.faults.retry_after = "1"
        sink = await started(settings(receiver, retry={**FAST_RETRY, "maximum": 0.05}), state_dir)
        streams = ["activities", "queries"]
        batches = [envelopes(s, 40) for s in streams]
        started_at = time.monotonic()
        await asyncio.gather(*(sink.send(b) for b in batches))
        elapsed = time.monotonic() - started_at
        await sink.close()
    assert elapsed >= 1.9, f"Retry-After: 1 was not honoured ({elapsed:.2f}s for 2 failures)"
    assert_delivered(receiver.requests, batches[0] + batches[1], allow_retried_copies=False)


async def test_slow_responses_retry_and_only_duplicate_whole_retried_requests(state_dir):
    async with HttpReceiver() as receiver:
        receiver.faults.delay_after_accept = 0.6  # accepted, but the answer comes after our timeout
        sink = await started(settings(receiver, timeout=0.3), state_dir)
        batch = envelopes("activities", 20)
        sending = asyncio.create_task(sink.send(batch))
        await async_wait_until(lambda: receiver.attempts >= 2, what="a retry after the timeout")
        receiver.faults.delay_after_accept = 0
        await sending
        await sink.close()
    assert len(receiver.requests) >= 2
    assert_delivered(receiver.requests, batch)


async def test_a_4xx_dead_letters_the_request_with_the_reason(state_dir):
    async with HttpReceiver() as receiver:
        receiver.reject_status = 422
        receiver.reject_when = lambda item: item.get("poison") is True
        sink = await started(settings(receiver, batch={"max_events": 2, "max_age": 0}), state_dir)
        batch = envelopes("activities", 2) + envelopes("activities", 2, start=2, poison=True)
        await sink.send(batch)
        await sink.close()
    assert receiver.items == [e.event for e in batch[:2]]
    lines = [json.loads(x) for x in (state_dir / "dead-letter" / "web.jsonl").read_text().splitlines()]
    assert [line["key"] for line in lines] == ["activities-2", "activities-3"]
    assert lines[0]["reason"] == "HTTP 422: schema violation: poison item"


async def test_413_splits_the_request_until_it_fits(state_dir):
    async with HttpReceiver() as receiver:
        sink = await started(settings(receiver, batch={"max_events": 16, "max_age": 0}), state_dir)
        batch = envelopes("activities", 16)
        one = len(json.dumps(batch[0].event)) + 1
        receiver.max_body = one * 4 + 10
        await sink.send(batch)
        await sink.close()
    assert receiver.items == [e.event for e in batch]
    assert max(len(r) for r in receiver.requests) <= 4


async def test_rejected_credentials_stop_the_sink_loudly_without_leaking_the_secret(
    state_dir, caplog, capsys
):
    caplog.set_level(logging.DEBUG)
    async with HttpReceiver(expected_auth="Bearer right") as receiver:
        config = settings(receiver, auth="bearer", token=SECRET)
        sink = await started(config, state_dir)
        with pytest.raises(SinkFatalError) as failure:
            await sink.send(envelopes("activities", 3))
        await sink.close()
    assert receiver.items == [] and not (state_dir / "dead-letter").exists()
    health = sink.health()
    assert health.state is SinkState.FAILED and "401" in (health.last_error or "")
    for text in (
        str(failure.value),
        health.last_error,
        repr(sink),
        repr(config),
        str(config),
        logged(caplog, capsys),
    ):
        assert SECRET not in (text or "")


async def test_https_verifies_the_server_with_the_configured_ca(tmp_path, state_dir):
    pki = make_pki(tmp_path / "pki")
    async with HttpReceiver(ssl_context=pki.server_context()) as receiver:
        trusted = await started(settings(receiver, tls={"ca_file": str(pki.ca_file)}), state_dir)
        await trusted.send(envelopes("activities", 2))
        assert (await trusted.probe()).ok
        await trusted.close()
        untrusted = HttpSink(settings(receiver, name="untrusted"), state_dir=state_dir)
        probe = await untrusted.probe()
        assert not probe.ok and "certificate" in probe.detail.lower(), probe.detail
    assert len(receiver.items) == 2


async def test_probe_reports_reachability_and_credentials(state_dir):
    async with HttpReceiver(expected_auth=f"Bearer {SECRET}") as receiver:
        good = HttpSink(settings(receiver, auth="bearer", token=SECRET), state_dir=state_dir)
        bad = HttpSink(settings(receiver, auth="bearer", token="wrong"), state_dir=state_dir)
        assert (await good.probe()).ok
        assert not (await bad.probe()).ok
        assert receiver.probes == ["HEAD", "HEAD"] and receiver.items == []
    down = await HttpSink(settings(receiver), state_dir=state_dir).probe()
    assert not down.ok and "127.0.0.1" in down.detail


def test_settings_refuse_credentials_in_the_url_and_incomplete_auth():
    with pytest.raises(ValueError, match="credentials"):
        HttpSinkSettings(name="x", url="https://user:pw@example.com/in")
    with pytest.raises(ValueError, match="needs token"):
        HttpSinkSettings(name="x", url="https://example.com/in", auth="bearer")
    with pytest.raises(ValueError, match="not an http"):
        HttpSinkSettings(name="x", url="ftp://example.com/in")


@pytest.mark.parametrize(("k", "poison"), [(1, {250}), (5, {0, 1, 2, 333, 499})])
async def test_a_400_bisects_and_dead_letters_only_the_events_refused_alone(state_dir, k, poison):
    """A 400 for one event of a 500-event request used to dead-letter all 500."""
    n = 500
    async with HttpReceiver() as receiver:
        receiver.reject_when = lambda item: item["seq"] in poison
        sink = await started(settings(receiver, batch={"max_events": n, "max_age": 0}), state_dir)
        batch = envelopes("activities", n)
        await sink.send(batch)
        await sink.close()
    good = [e for e in batch if e.event["seq"] not in poison]
    assert_delivered(receiver.requests, good, allow_retried_copies=False)
    lines = [json.loads(x) for x in (state_dir / "dead-letter" / "web.jsonl").read_text().splitlines()]
    assert sorted(json.loads(line["event"])["seq"] for line in lines) == sorted(poison)
    assert {line["reason"] for line in lines} == {"HTTP 400: schema violation: poison item"}
    assert receiver.attempts <= 1 + 2 * k * math.ceil(math.log2(n)), receiver.attempts  # the documented cost


@pytest.mark.parametrize("status", [404, 405, 410, 415])
async def test_statuses_about_the_url_or_body_format_stop_the_sink_and_dead_letter_nothing(state_dir, status):
    async with HttpReceiver() as receiver:
        receiver.faults.fail_with.append(status)
        sink = await started(settings(receiver), state_dir)
        with pytest.raises(SinkFatalError, match=f"HTTP {status}"):
            await sink.send(envelopes("activities", 8))
        await sink.close()
    assert receiver.attempts == 1 and receiver.items == []
    assert not (state_dir / "dead-letter").exists()


@pytest.mark.parametrize("auth", ["bearer", "basic"])
async def test_an_echoing_receiver_gets_no_credential_into_health_dead_letters_or_logs(
    state_dir, caplog, capsys, monkeypatch, auth
):
    """The receiver quotes our Authorization header in every error body (JSON, so quotes and
    backslashes in the secret come back escaped). Nothing is registered process-wide here:
    the sink scrubs its own credentials."""
    monkeypatch.setattr(secrets, "_REGISTRY", secrets.Secrets())
    caplog.set_level(logging.DEBUG)
    secret = 'pa"ss\\word/4711-secret'
    credentials = (
        {"auth": "bearer", "token": secret}
        if auth == "bearer"
        else {"auth": "basic", "username": "collector", "password": secret}
    )
    async with HttpReceiver() as receiver:
        receiver.echo_authorization = True
        receiver.faults.fail_with.extend([503] * 1000)
        receiver.reject_when = lambda item: item["seq"] % 2 == 1
        sink = await started(
            settings(receiver, **credentials, batch={"max_events": 4, "max_age": 0}), state_dir
        )
        sending = asyncio.create_task(sink.send(envelopes("activities", 4)))

        def echoed() -> str | None:
            error = sink.health().last_error or ""
            return error if "received_authorization" in error else None

        health_error = await async_wait_until(echoed, 10, "a health error quoting the echo")
        receiver.faults.fail_with.clear()
        await sending
        await sink.close()
    dead_letters = (state_dir / "dead-letter" / "web.jsonl").read_text()
    reasons = [json.loads(line)["reason"] for line in dead_letters.splitlines()]
    assert reasons and all(r.startswith("HTTP 400: ") and REDACTED in r for r in reasons), reasons
    assert REDACTED in health_error
    pair = f"collector:{secret}".encode()
    forms = [
        secret,
        json.dumps(secret)[1:-1],
        base64.b64encode(pair).decode(),
        base64.b64encode(secret.encode()).decode(),
    ]
    for where, text in {
        "health": health_error,
        "dead letters": dead_letters,
        "logs": logged(caplog, capsys),
    }.items():
        assert [form for form in forms if form in text] == [], where
