"""The elasticsearch sink against a strict ``_bulk`` stand-in (tests/peers/elastic.py), over TLS
with a private CA: documents, exactly-once through ``create`` and 409, per-item results,
credentials and privileges, OpenSearch."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections import Counter
from typing import Any

import pytest
from pydantic import ValidationError

from auditstream.sinks.base import SinkFatalError, SinkState
from auditstream.sinks.elasticsearch import (
    ElasticsearchSink,
    ElasticsearchSinkSettings,
    api_key_header,
    document_id,
)
from tests.peers.elastic import ElasticReceiver
from tests.peers.tls import make_pki
from tests.sinks.conftest import AWKWARD, FAST_RETRY, envelopes, logged

KEY_ID = "VuaCfGcBCdbkQm-e5aOx"
KEY = "ui2lp2axTNmsyakw9tvNnw-SECRET"
ENCODED = base64.b64encode(f"{KEY_ID}:{KEY}".encode()).decode()


@pytest.fixture
def pki(tmp_path):
    return make_pki(tmp_path / "pki")


def receiver_for(pki, **kwargs: Any) -> ElasticReceiver:
    kwargs.setdefault("api_keys", {KEY_ID: KEY})
    return ElasticReceiver(ssl_context=pki.server_context(), **kwargs)


def settings(receiver: ElasticReceiver, pki, **overrides: Any) -> ElasticsearchSinkSettings:
    config: dict[str, Any] = {
        "type": "elasticsearch",
        "name": "elastic",
        "urls": [receiver.base_url],
        "api_key": ENCODED,
        "retry": FAST_RETRY,
        "batch": {"max_events": 50, "max_age": 0},
        "tls": {"ca_file": str(pki.ca_file)},
    }
    config.update(overrides)
    return ElasticsearchSinkSettings.model_validate(config)


async def started(config: ElasticsearchSinkSettings, state_dir) -> ElasticsearchSink:
    sink = ElasticsearchSink(config, state_dir=state_dir)
    await sink.start()
    return sink


def dead_letters(state_dir) -> list[dict[str, Any]]:
    path = state_dir / "dead-letter" / "elastic.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_each_event_is_a_document_with_timestamp_and_an_id_from_its_key(pki, state_dir):
    async with receiver_for(pki) as receiver:
        sink = await started(settings(receiver, pki), state_dir)
        batch = envelopes("activities", 3) + envelopes("queries", 2)
        await sink.send(batch)
        await sink.close()
    assert len(receiver.docs) == 5
    for envelope in batch:
        doc = receiver.docs[
            (f"logs-strongdm.{envelope.stream}-default", document_id(envelope.stream, envelope.key))
        ]
        assert doc == {"@timestamp": doc["@timestamp"], **envelope.event}
    first = receiver.docs[("logs-strongdm.activities-default", document_id("activities", "activities-0"))]
    assert first["@timestamp"] == "2024-05-01T12:00:00.123456789Z"  # the record's time, not now
    assert first["message"] == AWKWARD
    assert receiver.gzip_requests >= 1


async def test_sending_again_after_a_crash_is_answered_409_and_indexes_nothing_twice(pki, state_dir):
    async with receiver_for(pki) as receiver:
        batch = envelopes("activities", 30)
        sink = await started(settings(receiver, pki), state_dir)
        await sink.send(batch[:20])
        await sink.close()
        # the engine had not checkpointed: the next process sends the same records again
        again = await started(settings(receiver, pki), state_dir)
        await again.send(batch)
        await again.close()
    assert len(receiver.docs) == 30
    assert receiver.conflicts == 20
    assert again.transport.conflicts == 20  # type: ignore[attr-defined]
    assert dead_letters(state_dir) == [] and again.health().state is SinkState.OK


async def test_a_record_is_indexed_once_per_backing_index_and_again_after_a_rollover(pki, state_dir):
    """What "each record once" means for a data stream, as docs/sinks.md says it: ``create``
    answers 409 only for an ``_id`` in the write index, so a record sent again after the data
    stream rolled over is indexed a second time, in the new backing index."""
    async with receiver_for(pki) as receiver:
        target = "logs-strongdm.activities-default"
        batch = envelopes("activities", 10)
        sink = await started(settings(receiver, pki), state_dir)
        await sink.send(batch)
        await sink.send(batch)  # sent again (a lost answer, a restart): 409 for each, nothing twice
        assert receiver.conflicts == 10 and len(receiver.indexed) == 10
        second = receiver.rollover(target)
        await sink.send(batch[:3])  # sent again after the rollover: not refused, indexed again
        await sink.close()
    copies = Counter(doc_id for _, _, doc_id in receiver.indexed)
    twice = {document_id("activities", e.key) for e in batch[:3]}
    assert {doc_id for doc_id, n in copies.items() if n == 2} == twice
    assert [concrete for _, concrete, doc_id in receiver.indexed if doc_id in twice][3:] == [second] * 3
    assert dead_letters(state_dir) == [] and sink.health().state is SinkState.OK


async def test_items_refused_with_429_or_503_are_sent_again_alone(pki, state_dir):
    async with receiver_for(pki) as receiver:
        receiver.item_faults.extend([429, 503])
        sink = await started(settings(receiver, pki), state_dir)
        await sink.send(envelopes("activities", 10))
        await sink.close()
    assert receiver.bulk_sizes == [10, 2]  # the eight indexed items were not sent again
    assert len(receiver.docs) == 10 and receiver.conflicts == 0


async def test_when_every_item_is_throttled_the_request_is_retried_with_backoff(pki, state_dir):
    async with receiver_for(pki) as receiver:
        receiver.item_faults.extend([429] * 10)
        sink = await started(settings(receiver, pki), state_dir)
        await sink.send(envelopes("activities", 10))
        await sink.close()
    assert receiver.bulk_sizes == [10, 10]
    assert len(receiver.docs) == 10 and sink.health().state is SinkState.OK


async def test_an_item_refused_for_its_content_is_dead_lettered_and_the_request_not_resent(pki, state_dir):
    async with receiver_for(pki) as receiver:
        receiver.reject_when = lambda doc: doc.get("poison") is True
        sink = await started(settings(receiver, pki), state_dir)
        batch = envelopes("activities", 4) + envelopes("activities", 1, start=4, poison=True)
        batch += envelopes("activities", 5, start=5)
        await sink.send(batch)
        await sink.close()
    assert receiver.bulk_sizes == [10]
    assert len(receiver.docs) == 9
    (line,) = dead_letters(state_dir)
    assert line["key"] == "activities-4"
    assert line["reason"].startswith("HTTP 400 document_parsing_exception")
    action, document, end = line["event"].split("\n")  # replayable as a _bulk body
    assert json.loads(action)["create"]["_id"] == document_id("activities", "activities-4")
    assert json.loads(document)["poison"] is True and end == ""


async def test_a_closed_index_refusing_every_item_stops_the_sink_instead_of_dead_lettering(pki, state_dir):
    """``index_closed_exception`` on every item is the target's refusal, not the events'."""
    async with receiver_for(pki) as receiver:
        receiver.closed.add("logs-strongdm.activities-default")
        sink = await started(settings(receiver, pki), state_dir)
        batch = envelopes("activities", 20)
        with pytest.raises(SinkFatalError, match="index_closed_exception: closed") as failure:
            await sink.send(batch)
        assert "fix the target" in str(failure.value) and sink.health().state is SinkState.FAILED
        with pytest.raises(SinkFatalError):  # the engine tries again: one document alone
            await sink.send(batch)
        receiver.closed.clear()  # the operator opens the index
        await sink.send(batch)
        await sink.close()
    assert dead_letters(state_dir) == []
    assert receiver.attempts == 1 + 1 + 2  # the request; then one item alone; then it, then the rest
    assert len(receiver.docs) == 20 and sink.health().state is SinkState.OK


async def test_a_body_over_the_size_limit_is_halved_until_it_fits(pki, state_dir):
    async with receiver_for(pki) as receiver:
        receiver.max_content_length = 8_000
        sink = await started(settings(receiver, pki), state_dir)
        await sink.send(envelopes("activities", 40, pad="z" * 300))
        await sink.close()
    assert len(receiver.docs) == 40 and receiver.conflicts == 0


async def test_a_missing_privilege_stops_the_sink_names_it_and_keeps_the_data(pki, state_dir):
    async with receiver_for(pki) as receiver:
        receiver.privileges[f"api_key:{KEY_ID}"] = {"read"}
        config = settings(receiver, pki)
        probe = await ElasticsearchSink(config, state_dir=state_dir).probe()
        sink = await started(config, state_dir)
        with pytest.raises(SinkFatalError, match=r"create_doc"):
            await sink.send(envelopes("activities", 5))
        assert sink.health().state is SinkState.FAILED and dead_letters(state_dir) == []
        receiver.privileges.clear()  # the operator grants it: the engine's next try delivers
        await sink.send(envelopes("activities", 5))
        await sink.close()
    assert not probe.ok and "missing index privilege create_doc on logs-strongdm.*-default" in probe.detail
    assert len(receiver.docs) == 5


async def test_rejected_credentials_are_fatal_and_never_printed(pki, state_dir, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    async with receiver_for(pki, api_keys={KEY_ID: "another-key"}) as receiver:
        config = settings(receiver, pki)
        sink = await started(config, state_dir)
        with pytest.raises(SinkFatalError, match="credentials rejected"):
            await sink.send(envelopes("activities", 3))
        probe = await sink.probe()
        await sink.close()
    assert receiver.attempts == 1
    assert not probe.ok and "HTTP 401" in probe.detail
    for text in (logged(caplog, capsys), str(sink.health().last_error), probe.detail, repr(config)):
        assert KEY not in text and ENCODED not in text


async def test_basic_auth_from_a_password_file(pki, state_dir, tmp_path):
    (tmp_path / "password").write_text("elastic-PASSWORD-123\n")
    async with receiver_for(pki, api_keys={}, users={"auditstream": "elastic-PASSWORD-123"}) as receiver:
        config = settings(
            receiver, pki, api_key=None, username="auditstream", password_file=str(tmp_path / "password")
        )
        sink = await started(config, state_dir)
        await sink.send(envelopes("activities", 3))
        await sink.close()
    assert len(receiver.docs) == 3


async def test_an_index_template_and_an_ingest_pipeline(pki, state_dir):
    async with receiver_for(pki) as receiver:
        config = settings(receiver, pki, index="strongdm-{stream}", pipeline="strongdm-audit")
        probe = await ElasticsearchSink(config, state_dir=state_dir).probe()
        sink = await started(config, state_dir)
        with pytest.raises(SinkFatalError, match=r"pipeline with id \[strongdm-audit\] does not exist"):
            await sink.send(envelopes("roles_history", 2))
        receiver.pipelines.add("strongdm-audit")
        await sink.send(envelopes("roles_history", 2))
        await sink.close()
    assert not probe.ok and "ingest pipeline strongdm-audit does not exist" in probe.detail
    assert {index for index, _ in receiver.docs} == {"strongdm-roles_history"}


async def test_opensearch_is_a_target_too(pki, state_dir):
    async with receiver_for(pki, flavor="opensearch") as receiver:
        config = settings(receiver, pki)
        probe = await ElasticsearchSink(config, state_dir=state_dir).probe()
        sink = await started(config, state_dir)
        await sink.send(envelopes("activities", 3))
        await sink.close()
    assert probe.ok and "OpenSearch 2.11.0" in probe.detail
    assert len(receiver.docs) == 3


async def test_a_node_that_is_down_is_skipped_for_the_next(pki, state_dir):
    dead = receiver_for(pki)  # never started: connection refused
    async with receiver_for(pki) as receiver:
        sink = await started(settings(receiver, pki, urls=[dead.base_url, receiver.base_url]), state_dir)
        await asyncio.gather(*(sink.send(envelopes(s, 5)) for s in ("activities", "queries")))
        await sink.close()
    assert len(receiver.docs) == 10


async def test_check_reports_the_product_and_the_privileges(pki, state_dir):
    async with receiver_for(pki) as receiver:
        result = await ElasticsearchSink(settings(receiver, pki), state_dir=state_dir).probe()
    assert result.ok
    assert (
        "Elasticsearch 8.13.4" in result.detail and "create_doc and auto_configure granted" in result.detail
    )
    assert receiver.docs == {}


def test_settings_are_checked(pki):
    receiver = receiver_for(pki)
    with pytest.raises(ValidationError, match="either data_stream or index"):
        settings(receiver, pki, data_stream="logs-a-b", index="c")
    with pytest.raises(ValidationError, match="api_key must be"):
        settings(receiver, pki, api_key="not-base64-and-no-colon")
    with pytest.raises(ValidationError, match="go together"):
        settings(receiver, pki, api_key=None, username="u")
    with pytest.raises(ValidationError, match="not a valid index"):
        settings(receiver, pki, index="Strongdm-{stream}")
    with pytest.raises(ValidationError, match="credentials in the auth settings"):
        settings(receiver, pki, urls=["https://u:p@es.example.com:9200"])
    assert api_key_header(f"{KEY_ID}:{KEY}") == f"ApiKey {ENCODED}"
    assert api_key_header(ENCODED) == f"ApiKey {ENCODED}"
