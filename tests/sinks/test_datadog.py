"""The datadog sink against a strict Datadog Logs intake stand-in (tests/peers/datadog.py), over
TLS with a private CA: the entry shape, the limits, every answer of the reference, the key
check."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from pydantic import ValidationError

from auditstream.sinks.base import SinkFatalError, SinkState
from auditstream.sinks.datadog import DatadogSink, DatadogSinkSettings
from tests.helpers import async_wait_until
from tests.peers.datadog import DatadogReceiver
from tests.peers.tls import make_pki
from tests.sinks.conftest import AWKWARD, FAST_RETRY, assert_delivered, envelopes, logged

API_KEY = "dd0123456789abcdefSECRETkey01234"


@pytest.fixture
def pki(tmp_path):
    return make_pki(tmp_path / "pki")


def settings(receiver: DatadogReceiver, pki, **overrides: Any) -> DatadogSinkSettings:
    config: dict[str, Any] = {
        "type": "datadog",
        "name": "datadog",
        "endpoint_url": receiver.base_url,
        "api_key": API_KEY,
        "retry": FAST_RETRY,
        "tls": {"ca_file": str(pki.ca_file)},
    }
    config.update(overrides)
    return DatadogSinkSettings.model_validate(config)


async def started(config: DatadogSinkSettings, state_dir) -> DatadogSink:
    sink = DatadogSink(config, state_dir=state_dir)
    await sink.start()
    return sink


def receiver_for(pki, **kwargs: Any) -> DatadogReceiver:
    return DatadogReceiver(api_key=API_KEY, ssl_context=pki.server_context(), **kwargs)


def events_of(receiver: DatadogReceiver) -> list[list[dict[str, Any]]]:
    return [[json.loads(entry["message"]) for entry in request] for request in receiver.requests]


async def test_the_event_travels_in_message_with_the_reserved_attributes_beside_it(pki, state_dir):
    async with receiver_for(pki) as receiver:
        config = settings(
            receiver, pki, service="audit", source="strongdm", tags=["env:prod", "stream:{stream}"]
        )
        sink = await started(config, state_dir)
        batch = envelopes("activities", 3) + envelopes("queries", 2)
        await sink.send(batch)
        await sink.close()
    entry = receiver.entries[0]
    assert set(entry) == {"message", "ddsource", "service", "ddtags", "hostname"}
    assert (entry["ddsource"], entry["service"]) == ("strongdm", "audit")
    assert json.loads(entry["message"]) == batch[0].event
    assert json.loads(entry["message"])["message"] == AWKWARD
    tags = {json.loads(e["message"])["stream"]: e["ddtags"] for e in receiver.entries}
    assert tags == {"activities": "env:prod,stream:activities", "queries": "env:prod,stream:queries"}
    assert receiver.gzip_requests == len(receiver.requests) >= 1
    assert_delivered(events_of(receiver), batch, allow_retried_copies=False)


async def test_requests_keep_within_1000_entries_and_5_mb(pki, state_dir):
    async with receiver_for(pki) as receiver:
        sink = await started(settings(receiver, pki), state_dir)
        big = "x" * 6_000
        batches = [envelopes(stream, 1500, pad=big) for stream in ("activities", "queries")]
        await asyncio.gather(*(sink.send(batch) for batch in batches))
        await sink.close()
    sizes = [len(request) for request in receiver.requests]
    assert max(sizes) <= 1000 and sum(sizes) == 3000
    assert len(receiver.requests) >= 4  # 3000 entries of 6 KB: 18 MB, so the byte limit cut too
    assert_delivered(events_of(receiver), batches[0] + batches[1], allow_retried_copies=False)


def test_the_batch_settings_cannot_exceed_the_intakes_limits(pki):
    receiver = receiver_for(pki)
    with pytest.raises(ValidationError, match="less than or equal to 1000"):
        settings(receiver, pki, batch={"max_events": 1001})
    with pytest.raises(ValidationError, match="less than or equal to 4998999"):
        settings(receiver, pki, batch={"max_bytes": 5_000_000})


async def test_a_log_over_1_mb_is_dead_lettered_whole_not_truncated(pki, state_dir):
    async with receiver_for(pki) as receiver:
        sink = await started(settings(receiver, pki), state_dir)
        batch = envelopes("activities", 2) + envelopes("activities", 1, start=2, pad="y" * 1_100_000)
        batch += envelopes("activities", 2, start=3)
        await sink.send(batch)
        await sink.close()
    assert receiver.truncated == 0
    assert [e["id"] for e in receiver.events] == [
        "activities-0",
        "activities-1",
        "activities-3",
        "activities-4",
    ]
    (line,) = [json.loads(x) for x in (state_dir / "dead-letter" / "datadog.jsonl").read_text().splitlines()]
    assert line["key"] == "activities-2" and "truncates" in line["reason"]
    assert len(json.loads(json.loads(line["event"])["message"])["pad"]) == 1_100_000


async def test_a_400_is_narrowed_to_the_entry_refused_alone(pki, state_dir):
    async with receiver_for(pki) as receiver:
        receiver.reject_when = lambda entry: '"poison":true' in entry["message"]
        sink = await started(settings(receiver, pki), state_dir)
        batch = envelopes("activities", 5) + envelopes("activities", 1, start=5, poison=True)
        batch += envelopes("activities", 10, start=6)
        await sink.send(batch)
        await sink.close()
    assert_delivered(
        events_of(receiver), [e for e in batch if e.key != "activities-5"], allow_retried_copies=False
    )
    (line,) = [json.loads(x) for x in (state_dir / "dead-letter" / "datadog.jsonl").read_text().splitlines()]
    assert line["key"] == "activities-5" and "HTTP 400" in line["reason"]
    assert receiver.refused_sizes[0] == 16


async def test_a_400_for_every_entry_alone_stops_the_sink_instead_of_dead_lettering(pki, state_dir):
    """The intake refusing every entry of the stream, each alone, with the same answer (a
    payload format it does not take) is a sink failure, not a stream drained into the file."""
    async with receiver_for(pki) as receiver:
        receiver.reject_when = lambda entry: True
        sink = await started(settings(receiver, pki), state_dir)
        with pytest.raises(SinkFatalError, match="invalid log entry"):
            await sink.send(envelopes("activities", 16))
        await sink.close()
    assert not (state_dir / "dead-letter").exists() and sink.health().state is SinkState.FAILED


@pytest.mark.parametrize("status", [408, 429, 500, 503])
async def test_retryable_answers_are_retried_until_accepted(pki, state_dir, status):
    async with receiver_for(pki) as receiver:
        receiver.faults.fail_with.extend([status, status])
        receiver.faults.retry_after = "0"
        sink = await started(settings(receiver, pki), state_dir)
        batch = envelopes("activities", 20)
        await sink.send(batch)
        await sink.close()
    assert receiver.attempts == 3
    assert_delivered(events_of(receiver), batch, allow_retried_copies=False)
    assert sink.health().state is SinkState.OK


async def test_the_intake_down_then_up_loses_nothing(pki, state_dir):
    receiver = receiver_for(pki)
    sink = await started(settings(receiver, pki), state_dir)
    batch = envelopes("activities", 30)
    sending = asyncio.create_task(sink.send(batch))
    await async_wait_until(lambda: sink.health().state is SinkState.RETRYING, what="retrying while down")
    await receiver.start()
    await sending
    await sink.close()
    await receiver.stop()
    assert_delivered(events_of(receiver), batch, allow_retried_copies=False)


@pytest.mark.parametrize("key", ["", "wrong"])
async def test_a_refused_key_is_fatal_keeps_the_data_and_is_never_printed(
    pki, state_dir, caplog, capsys, key
):
    caplog.set_level(logging.DEBUG)
    async with receiver_for(pki) as receiver:
        receiver.api_key = "another-key-entirely-0000" if key == "wrong" else API_KEY
        sink = await started(settings(receiver, pki), state_dir)
        if key == "":
            sink.transport._headers.pop("DD-API-KEY")  # type: ignore[attr-defined]
        with pytest.raises(SinkFatalError, match=r"HTTP 40[13].*fix api_key / api_key_file, or site"):
            await sink.send(envelopes("activities", 3))
        assert receiver.attempts == 1
        assert not (state_dir / "dead-letter").exists()
        probe = await sink.probe()
        await sink.close()
    if key == "wrong":
        assert not probe.ok and "refused the API key" in probe.detail
    assert API_KEY not in logged(caplog, capsys) + str(sink.health().last_error) + repr(sink.settings)


async def test_check_validates_the_key_without_sending_a_log(pki, state_dir):
    async with receiver_for(pki) as receiver:
        result = await DatadogSink(settings(receiver, pki), state_dir=state_dir).probe()
    assert result.ok and "API key valid" in result.detail
    assert receiver.validations == 1 and receiver.attempts == 0


async def test_without_the_private_ca_nothing_is_sent(pki, state_dir):
    async with receiver_for(pki) as receiver:
        config = settings(receiver, pki, tls={})
        result = await DatadogSink(config, state_dir=state_dir).probe()
    assert not result.ok and "CERTIFICATE_VERIFY_FAILED" in result.detail
    assert receiver.validations == 0


def test_site_names_the_intake_and_the_api_host():
    config = DatadogSinkSettings.model_validate({"name": "d", "api_key": API_KEY, "site": "app.datadoghq.eu"})
    assert config.intake_url == "https://http-intake.logs.datadoghq.eu/api/v2/logs"
    assert config.validate_url == "https://api.datadoghq.eu/api/v1/validate"
    default = DatadogSinkSettings.model_validate({"name": "d", "api_key": API_KEY})
    assert default.intake_url == "https://http-intake.logs.datadoghq.com/api/v2/logs"
    with pytest.raises(ValidationError, match="not a Datadog site"):
        DatadogSinkSettings.model_validate({"name": "d", "api_key": API_KEY, "site": "https://datadoghq.com"})
    with pytest.raises(ValidationError, match="not a Datadog tag"):
        DatadogSinkSettings.model_validate({"name": "d", "api_key": API_KEY, "tags": ["a:b,c:d"]})
    with pytest.raises(ValidationError, match="format"):
        DatadogSinkSettings.model_validate({"name": "d", "api_key": API_KEY, "format": "cef"})
