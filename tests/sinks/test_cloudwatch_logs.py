"""The cloudwatch_logs sink against moto server, read back with boto3.

moto checks time order and the 14-day / 2-hour windows (``rejectedLogEventsInfo``) but not
the size, count and 24-hour limits, and never throttles: the proxy in front of it refuses
what CloudWatch Logs would refuse (tests/peers/aws_proxy.py), so a call breaking a limit
fails these tests instead of passing unnoticed.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from auditstream.sinks.base import Envelope, SinkFatalError, SinkState
from auditstream.sinks.cloudwatch_logs import CloudWatchLogsSink, CloudWatchLogsSinkSettings
from auditstream.sinks.observer import NullObserver
from tests.peers.aws_proxy import AwsProxy, Call
from tests.peers.moto import MotoServer, aws_env_fixture, moto_fixture  # noqa: F401
from tests.sinks.conftest import AWKWARD, FAST_RETRY

pytestmark = pytest.mark.usefixtures("aws_env")

MS = 1_000_000
HOUR_MS = 3600 * 1000
HALF_HOUR_MS = HOUR_MS // 2
DAY_MS = 24 * HOUR_MS


def cw_settings(endpoint_url: str, **overrides: Any) -> CloudWatchLogsSinkSettings:
    config: dict[str, Any] = {
        "type": "cloudwatch_logs",
        "name": "cw",
        "log_group": f"/strongdm/audit-{uuid.uuid4().hex[:8]}",
        "log_stream": "auditstream/{stream}",
        "region": "us-east-1",
        "endpoint_url": endpoint_url,
        "retry": FAST_RETRY,
    }
    config.update(overrides)
    return CloudWatchLogsSinkSettings.model_validate(config)


async def started(settings: CloudWatchLogsSinkSettings, state_dir: Path) -> CloudWatchLogsSink:
    sink = CloudWatchLogsSink(settings, state_dir=state_dir)
    await sink.start()
    return sink


def now_ms() -> int:
    return time.time_ns() // MS


def records(stream: str, times_ms: list[int], start: int = 0, **extra: Any) -> list[Envelope]:
    return [
        Envelope(
            stream,
            f"{stream}-{i}",
            t * MS + 123_456,
            {"id": f"{stream}-{i}", "stream": stream, "seq": i, "message": AWKWARD, **extra},
        )
        for i, t in enumerate(times_ms, start)
    ]


def stored(moto: MotoServer, group: str) -> dict[str, list[dict[str, Any]]]:
    """log stream -> the events CloudWatch holds, messages parsed, with their timestamps."""
    return {
        name: [{**json.loads(e["message"]), "_ts": e["timestamp"]} for e in events]
        for name, events in moto.log_events(group).items()
    }


def dead_letters(state_dir: Path, name: str = "cw") -> list[dict[str, Any]]:
    path = state_dir / "dead-letter" / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def assert_valid_calls(calls: list[Call]) -> None:
    """Every PutLogEvents call was accepted (the proxy refuses any that breaks a limit), but
    for those that found no log stream yet, and held its events in time order."""
    refused = [c for c in calls if c.status != 200 and b"ResourceNotFoundException" not in c.answer]
    assert calls and not refused, [(c.status, c.answer) for c in refused]
    for call in calls:
        times = [event["timestamp"] for event in call.json["logEvents"]]
        assert times == sorted(times)


async def test_every_record_of_every_stream_is_read_back_from_its_log_stream(moto, state_dir):
    async with AwsProxy(moto.endpoint_url) as proxy:
        settings = cw_settings(proxy.endpoint_url, retention_days=30)
        sink = await started(settings, state_dir)
        base = now_ms() - 6 * HOUR_MS
        sent = {
            "activities": records("activities", [base + i * 1000 for i in range(600)]),
            "queries": records("queries", [base + i * 2000 for i in range(250)]),
            # a page whose records are not in time order: a call must be
            "roles_history": records("roles_history", [base + (i * 7919 % 40) * 1000 for i in range(40)]),
        }

        async def one_stream(batch: list[Envelope]) -> None:
            for start in range(0, len(batch), 100):
                await sink.send(batch[start : start + 100])

        await asyncio.gather(*(one_stream(batch) for batch in sent.values()))
        await sink.close()
    held = stored(moto, settings.log_group)
    assert set(held) == {f"auditstream/{stream}" for stream in sent}
    for stream, batch in sent.items():
        events = held[f"auditstream/{stream}"]
        assert Counter(e["id"] for e in events) == Counter(e.key for e in batch), stream
        by_id = {e.key: e for e in batch}
        assert all(e["_ts"] == by_id[e["id"]].time_ns // MS for e in events)
        assert events[0]["message"] == AWKWARD
    assert_valid_calls(proxy.of("PutLogEvents"))
    group = moto.client("logs").describe_log_groups(logGroupNamePrefix=settings.log_group)["logGroups"]
    assert [g["retentionInDays"] for g in group] == [30]


async def test_a_deleted_log_group_is_created_again(moto, state_dir):
    settings = cw_settings(moto.endpoint_url)
    sink = await started(settings, state_dir)
    first = records("activities", [now_ms() - 1000])
    await sink.send(first)
    moto.client("logs").delete_log_group(logGroupName=settings.log_group)
    second = records("activities", [now_ms()], start=1)
    await sink.send(second)
    await sink.close()
    assert [e["id"] for e in stored(moto, settings.log_group)["auditstream/activities"]] == ["activities-1"]


class Health(NullObserver):
    def __init__(self) -> None:
        self.states: list[SinkState] = []

    def health_changed(self, sink: str, state: SinkState) -> None:
        self.states.append(state)


async def test_throttling_and_5xx_are_retried_and_nothing_is_lost_or_repeated(moto, state_dir):
    async with AwsProxy(moto.endpoint_url) as proxy:
        settings = cw_settings(proxy.endpoint_url)
        health = Health()
        sink = CloudWatchLogsSink(settings, state_dir=state_dir, observer=health)
        await sink.start()
        refusals = [
            (400, "ThrottlingException", "Rate exceeded"),
            (400, "ThrottlingException", "Rate exceeded"),
            (503, "ServiceUnavailableException", "The service is unavailable"),
        ]
        proxy.refuse["PutLogEvents"].extend(refusals)
        base = now_ms() - HOUR_MS
        batches = [records("activities", [base + i for i in range(300)]), records("queries", [base] * 200)]
        await asyncio.gather(*(sink.send(b) for b in batches))
        await sink.close()
    held = stored(moto, settings.log_group)
    ids = Counter(e["id"] for events in held.values() for e in events)
    assert set(ids) == {e.key for b in batches for e in b} and set(ids.values()) == {1}
    refused = [c for c in proxy.of("PutLogEvents") if c.status in (400, 503)]
    answers = [json.loads(c.answer)["__type"] for c in refused]
    assert Counter(answers) - Counter({"ResourceNotFoundException": 99}) == Counter(
        {"ThrottlingException": 2, "ServiceUnavailableException": 1}
    )
    assert health.states[:1] == [SinkState.RETRYING] and health.states[-1] is SinkState.OK
    assert not dead_letters(state_dir)


async def test_rejected_events_and_only_those_are_dead_lettered_with_the_reason(moto, state_dir):
    """Too old: more than 14 days ago; too new: more than 2 hours ahead. moto reports
    ``tooNewLogEventStartIndex`` as the last too-new event rather than the first, so one
    too-new event is sent (with several, moto itself would drop the others unreported)."""
    settings = cw_settings(moto.endpoint_url)
    sink = await started(settings, state_dir)
    now = now_ms()
    old = [now - 16 * DAY_MS, now - 16 * DAY_MS + 1000]  # a call of their own (24-hour span)
    edge = [now - 14 * DAY_MS - HALF_HOUR_MS, now - 14 * DAY_MS + HALF_HOUR_MS]  # rejected, accepted
    fine = [now - 3000, now - 2000, now - 1000]
    ahead = [now + 3 * HOUR_MS]  # in one call with `fine`
    batch = records("activities", old + edge + fine + ahead)
    await sink.send(batch)
    await sink.close()
    rejected = {line["key"]: line["reason"] for line in dead_letters(state_dir)}
    assert set(rejected) == {"activities-0", "activities-1", "activities-2", "activities-7"}
    assert all("too old" in rejected[f"activities-{i}"] for i in (0, 1, 2))
    assert "too new (more than 2 hours in the future)" in rejected["activities-7"]
    held = stored(moto, settings.log_group)["auditstream/activities"]
    assert [e["id"] for e in held] == ["activities-3", "activities-4", "activities-5", "activities-6"]
    lines = dead_letters(state_dir)
    assert json.loads(lines[0]["event"])["id"] == lines[0]["key"], "the event as it was sent"


async def test_requests_beyond_a_calls_limits_become_calls_within_every_limit(moto, state_dir):
    async with AwsProxy(moto.endpoint_url) as proxy:
        big_batches = {"max_events": 100_000, "max_bytes": 64 * 1024 * 1024, "max_age": 0}
        settings = cw_settings(proxy.endpoint_url, batch=big_batches)
        sink = await started(settings, state_dir)
        now = now_ms()
        span = records("activities", [now - 3 * DAY_MS + i * HOUR_MS for i in range(72)])  # 3 days
        many = [Envelope("queries", f"q{i}", (now - 1000) * MS, {"id": f"q{i}"}) for i in range(12_000)]
        heavy = records("roles_history", [now - 1000 + i for i in range(60)], padding="x" * 40_000)  # 2.4 MB
        await asyncio.gather(sink.send(span), sink.send(many), sink.send(heavy))
        await sink.close()
    calls = proxy.of("PutLogEvents")
    assert_valid_calls(calls)
    per_stream = Counter(call.json["logStreamName"] for call in calls if call.status == 200)
    assert per_stream == {
        "auditstream/activities": 3,
        "auditstream/queries": 2,
        "auditstream/roles_history": 3,
    }
    held = stored(moto, settings.log_group)
    for batch in (span, many, heavy):
        name = f"auditstream/{batch[0].stream}"
        assert Counter(e["id"] for e in held[name]) == Counter(e.key for e in batch)


async def test_an_event_over_256_kb_is_dead_lettered_whole_and_the_rest_delivered(moto, state_dir):
    settings = cw_settings(moto.endpoint_url)
    sink = await started(settings, state_dir)
    now = now_ms()
    batch = records("queries", [now - 2000, now - 1000, now])
    huge = Envelope(
        "queries", "queries-huge", (now - 1500) * MS, {"id": "queries-huge", "query": "q" * 300_000}
    )
    await sink.send([batch[0], huge, *batch[1:]])
    await sink.close()
    (line,) = dead_letters(state_dir)
    assert line["key"] == "queries-huge" and "at most 262,144 per event (not truncated)" in line["reason"]
    assert json.loads(line["event"])["query"] == "q" * 300_000
    held = stored(moto, settings.log_group)["auditstream/queries"]
    assert [e["id"] for e in held] == [e.key for e in batch]


async def test_an_event_cloudwatch_refuses_is_isolated_and_dead_lettered(moto, state_dir):
    def poison(call: Call) -> tuple[int, str, str] | None:
        if call.operation == "PutLogEvents" and b"poison" in call.body:
            return 400, "InvalidParameterException", "1 validation error detected"
        return None

    async with AwsProxy(moto.endpoint_url) as proxy:
        proxy.refuse_when = poison
        settings = cw_settings(proxy.endpoint_url)
        sink = await started(settings, state_dir)
        now = now_ms()
        batch = records("activities", [now - 10_000 + i for i in range(9)])
        bad = records("activities", [now - 5000], start=9, note="poison")
        await sink.send(batch[:5] + bad + batch[5:])
        await sink.close()
    (line,) = dead_letters(state_dir)
    assert line["key"] == "activities-9"
    assert line["reason"] == "CloudWatch Logs: InvalidParameterException: 1 validation error detected"
    held = stored(moto, settings.log_group)["auditstream/activities"]
    assert Counter(e["id"] for e in held) == Counter(e.key for e in batch)


async def test_an_error_the_sink_does_not_classify_for_every_event_stops_the_sink(moto, state_dir):
    """Halved down to single events, each refused with the same error: the target's refusal."""
    async with AwsProxy(moto.endpoint_url) as proxy:
        proxy.refuse_when = lambda call: (
            (400, "DataFirehoseDeliveryException", "subscription destination unavailable")
            if call.operation == "PutLogEvents"
            else None
        )
        settings = cw_settings(proxy.endpoint_url)
        sink = await started(settings, state_dir)
        now = now_ms()
        batch = records("activities", [now - 10_000 + i for i in range(12)])
        with pytest.raises(SinkFatalError, match="DataFirehoseDeliveryException"):
            await sink.send(batch)
        assert sink.health().state is SinkState.FAILED
        proxy.refuse_when = None
        await sink.send(batch)
        await sink.close()
    assert dead_letters(state_dir) == []
    held = stored(moto, settings.log_group)["auditstream/activities"]
    assert Counter(e["id"] for e in held) == Counter(e.key for e in batch)


async def test_a_backfill_older_than_14_days_is_still_dead_lettered(moto, state_dir):
    """Too old is the events' time, not the target: a backfill of old history shares it by the
    thousand and still goes to the dead-letter file, as documented."""
    settings = cw_settings(moto.endpoint_url)
    sink = await started(settings, state_dir)
    old = now_ms() - 20 * DAY_MS
    await sink.send(records("activities", [old + i * 1000 for i in range(15)]))
    await sink.close()
    assert len(dead_letters(state_dir)) == 15 and sink.health().state is not SinkState.FAILED


async def test_without_create_a_missing_group_stops_the_sink_and_check_says_so(moto, state_dir):
    settings = cw_settings(moto.endpoint_url, create=False)
    result = await CloudWatchLogsSink(settings, state_dir=state_dir).probe()
    assert not result.ok and "does not exist; create it or set create = true" in result.detail
    sink = await started(settings, state_dir)
    with pytest.raises(SinkFatalError, match="set create = true"):
        await sink.send(records("activities", [now_ms()]))
    assert sink.health().state is SinkState.FAILED
    moto.client("logs").create_log_group(logGroupName=settings.log_group)
    moto.client("logs").create_log_stream(
        logGroupName=settings.log_group, logStreamName="auditstream/activities"
    )
    assert (await CloudWatchLogsSink(settings, state_dir=state_dir).probe()).ok
    await sink.send(records("activities", [now_ms()]))
    await sink.close()
    assert len(stored(moto, settings.log_group)["auditstream/activities"]) == 1


def test_settings_are_checked():
    base = {"type": "cloudwatch_logs", "name": "cw", "log_group": "/strongdm/audit"}
    settings = CloudWatchLogsSinkSettings.model_validate(base)
    assert (settings.log_stream, settings.create, settings.batch.max_events) == ("{stream}", True, 10_000)
    bad = [
        ({"log_stream": "{name}"}, "the only placeholder is {stream}"),
        ({"log_stream": "a:{stream}"}, "cannot hold ':'"),
        ({"retention_days": 10}, "retention_days of 1, 3, 5"),
        ({"retention_days": 30, "create": False}, "needs create = true"),
        ({"log_group": "bad group"}, "log_group"),
    ]
    for extra, message in bad:
        with pytest.raises(ValueError, match=message):
            CloudWatchLogsSinkSettings.model_validate({**base, **extra})
