"""The syslog sink against a real rsyslogd: what rsyslog parsed (app-name, msgid, structured
data, message with its newlines) must be what we sent, over TCP, TLS and UDP; and nothing is
lost when rsyslog goes down, restarts between batches, or stalls."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from typing import Any

import pytest

from auditstream.sinks.base import SinkState
from auditstream.sinks.syslog import SyslogSink, SyslogSinkSettings
from auditstream.sinks.syslog_format import TRUNCATION_MARKER
from tests.helpers import async_wait_until
from tests.peers.rsyslog import RSYSLOGD, SKIP_REASON, Rsyslog
from tests.sinks.conftest import FAST_RETRY, assert_delivered, envelopes

pytestmark = pytest.mark.skipif(RSYSLOGD is None, reason=SKIP_REASON)


@pytest.fixture
def rsyslog(tmp_path):
    with Rsyslog(tmp_path / "rsyslog") as receiver:
        yield receiver


def settings(rs: Rsyslog, transport: str = "tcp", **overrides: Any) -> SyslogSinkSettings:
    port = {"tcp": rs.tcp_port, "tls": rs.tls_port, "udp": rs.udp_port}[transport]
    config: dict[str, Any] = {
        "type": "syslog",
        "name": f"syslog-{transport}",
        "host": "127.0.0.1",
        "port": port,
        "transport": transport,
        "hostname": "bastion-1",
        "retry": FAST_RETRY,
        "batch": {"max_events": 100, "max_age": 0},
        "connect_timeout": 2,
        "ack_timeout": 5,
    }
    if transport == "tls":
        config["tls"] = {"ca_file": str(rs.pki.ca_file), "server_name": "localhost"}
    config.update(overrides)
    return SyslogSinkSettings.model_validate(config)


async def started(config: SyslogSinkSettings, state_dir) -> SyslogSink:
    sink = SyslogSink(config, state_dir=state_dir)
    await sink.start()
    return sink


def events(messages: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """rsyslog's messages as one 'request' each (syslog has no request boundaries)."""
    return [[json.loads(m["msg"])] for m in messages]


@pytest.mark.parametrize("transport", ["tcp", "tls", "udp"])
async def test_rsyslog_parses_exactly_what_we_sent(rsyslog, state_dir, transport):
    sink = await started(settings(rsyslog, transport), state_dir)
    batch = envelopes("activities", 20) + envelopes("account_attachments_history", 20)
    await sink.send(batch)
    await sink.close()
    messages = await rsyslog.async_wait_for(len(batch))
    assert len(messages) == len(batch)
    by_key = {e.key: e for e in batch}
    for message in messages:
        event = json.loads(message["msg"])
        sent = by_key[event["id"]]
        assert event == sent.event  # newlines, quotes, ] and \ included
        assert "\n" in event["message"]
        assert message["protocol-version"] == "1"
        assert message["app-name"] == "auditstream"
        assert message["hostname"] == "bastion-1"
        assert message["msgid"] == sent.stream[:32]
        assert message["procid"] == "-"
        assert message["pri"] == "134"  # local0.info
        assert message["timereported"].startswith("2024-05-01T12:00:00.")
        assert message["$!"]["rfc5424-sd"] == {"auditstream@32473": {"stream": sent.stream, "id": sent.key}}
    assert_delivered(events(messages), batch, allow_retried_copies=False)


async def test_cef_over_tls_and_rfc3164_over_udp(rsyslog, state_dir):
    cef = await started(settings(rsyslog, "tls", format="cef"), state_dir)
    await cef.send(envelopes("queries", 3))
    await cef.close()
    legacy = await started(settings(rsyslog, "udp", rfc=3164, app_name="sdm-audit"), state_dir)
    await legacy.send(envelopes("activities", 2))
    await legacy.close()
    messages = await rsyslog.async_wait_for(5)
    assert all(m["msg"].startswith("CEF:0|") and m["msgid"] == "queries" for m in messages[:3])
    assert [m["programname"] for m in messages[3:]] == ["sdm-audit", "sdm-audit"]
    assert [json.loads(m["msg"])["id"] for m in messages[3:]] == ["activities-0", "activities-1"]


async def test_lf_framing_is_understood_too(rsyslog, state_dir):
    sink = await started(settings(rsyslog, "tcp", framing="lf"), state_dir)
    batch = envelopes("activities", 5)
    await sink.send(batch)
    await sink.close()
    messages = await rsyslog.async_wait_for(5)
    assert [json.loads(m["msg"]) for m in messages] == [e.event for e in batch]


@pytest.mark.parametrize("transport", ["tcp", "tls"])
async def test_receiver_down_then_up_and_restarted_between_batches(rsyslog, state_dir, transport):
    sink = await started(settings(rsyslog, transport), state_dir)
    expected = envelopes("activities", 50)
    await sink.send(expected)  # a connection is established
    # Stop only once rsyslog has written what it took: what its TCP acknowledged but it never
    # processed is lost inside rsyslog, beyond any syslog client's sight (see the kill test).
    await rsyslog.async_wait_for(50)
    rsyslog.stop()
    down = envelopes("activities", 50, start=50)
    expected += down
    sending = asyncio.create_task(sink.send(down))
    await async_wait_until(lambda: sink.health().state is SinkState.RETRYING, what="retrying while down")
    rsyslog.start()
    await sending
    await rsyslog.async_wait_for(100)
    rsyslog.stop()  # restart while the sink holds an idle connection
    rsyslog.start()
    after = envelopes("queries", 50)
    expected += after
    await sink.send(after)
    await sink.close()
    messages = await rsyslog.async_wait_for(len(expected))
    assert_delivered(events(messages), expected, allow_retried_copies=False)


async def test_a_killed_receiver_mid_stream_only_loses_what_it_had_taken(rsyslog, state_dir):
    """SIGKILL mid-stream: the request in flight is resent on a new connection. Only what
    rsyslog's TCP had acknowledged and rsyslog had not yet written can be missing (no syslog
    client can see that), so anything missing is one run of events before the crash point."""
    sink = await started(settings(rsyslog, "tcp", batch={"max_events": 200, "max_age": 0}), state_dir)
    expected = envelopes("activities", 4000)
    sending = asyncio.create_task(sink.send(expected))
    await rsyslog.async_wait_for(1)
    rsyslog.kill()
    rsyslog.start()
    await sending
    await sink.close()

    def last_seq() -> int:
        messages = rsyslog.messages(skip_torn=True)
        return json.loads(messages[-1]["msg"])["seq"] if messages else -1

    await async_wait_until(lambda: last_seq() == 3999, what="the last event")
    seen = {json.loads(m["msg"])["seq"] for m in rsyslog.messages(skip_torn=True)}
    missing = sorted(set(range(4000)) - seen)
    if missing:
        assert missing == list(range(missing[0], missing[-1] + 1)), "holes: more than one run lost"
        assert missing[-1] < 3800, "the tail (sent after the crash) must all be there"


async def test_a_stalled_receiver_delays_but_loses_nothing(rsyslog, state_dir):
    sink = await started(settings(rsyslog, "tcp", batch={"max_events": 500, "max_age": 0}), state_dir)
    assert rsyslog._process is not None
    pid = rsyslog._process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        batch = envelopes("activities", 3000, pad="x" * 400)
        sending = asyncio.create_task(sink.send(batch))
        await asyncio.sleep(0.5)  # the fault: rsyslog frozen for half a second
        assert not sending.done(), "acknowledged while the receiver could not have read it all"
    finally:
        os.kill(pid, signal.SIGCONT)
    await sending
    await sink.close()
    messages = await rsyslog.async_wait_for(len(batch))
    assert_delivered(events(messages), batch, allow_retried_copies=False)


async def test_udp_size_policy_truncates_with_a_marker_or_refuses(rsyslog, state_dir):
    big = envelopes("activities", 1, pad="y" * 3000)
    small = envelopes("activities", 1, start=1)
    truncating = await started(settings(rsyslog, "udp", udp_max_bytes=1024), state_dir)
    await truncating.send(big)
    await truncating.close()
    (message,) = await rsyslog.async_wait_for(1)
    assert message["msg"].endswith(TRUNCATION_MARKER.decode()) and len(message["rawmsg"].encode()) <= 1024
    refusing = await started(settings(rsyslog, "udp", udp_oversize="refuse", name="strict"), state_dir)
    await refusing.send(big + small)
    await refusing.close()
    messages = await rsyslog.async_wait_for(2)
    assert json.loads(messages[1]["msg"])["id"] == "activities-1"
    (line,) = (state_dir / "dead-letter" / "strict.jsonl").read_text().splitlines()
    assert "udp_max_bytes" in json.loads(line)["reason"]


async def test_probe_connects_and_verifies_tls(rsyslog, state_dir):
    assert (await SyslogSink(settings(rsyslog, "tcp"), state_dir=state_dir).probe()).ok
    assert (await SyslogSink(settings(rsyslog, "tls"), state_dir=state_dir).probe()).ok
    unverified = settings(rsyslog, "tls", tls={"server_name": "localhost"})
    failed = await SyslogSink(unverified, state_dir=state_dir).probe()
    assert not failed.ok and "certificate" in failed.detail.lower()
    rsyslog.stop()
    assert not (await SyslogSink(settings(rsyslog, "tcp"), state_dir=state_dir).probe()).ok
