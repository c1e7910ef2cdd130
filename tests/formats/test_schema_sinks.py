"""The format choice reaches every sink: ``format = "ocsf" | "ecs"`` is accepted where the
receiver takes JSON documents, ``[ocsf] version`` reaches the encoder through the engine's
EncoderSettings, and the Elasticsearch sink indexes ECS documents as they are (their own
``@timestamp``) and OCSF events with ``@timestamp`` added."""

from __future__ import annotations

import typing

import orjson
import pytest
from pydantic import TypeAdapter, ValidationError

from auditstream.config import ConfigError, parse_config
from auditstream.engine.engine import build_sinks
from auditstream.formats import EncoderSettings, OcsfSettings
from auditstream.sinks.base import Envelope
from auditstream.sinks.datadog import DatadogSinkSettings, DatadogTransport
from auditstream.sinks.elasticsearch import (
    DEFAULT_DATA_STREAM,
    DEFAULT_ECS_DATA_STREAM,
    ElasticsearchSinkSettings,
    ElasticsearchTransport,
)
from auditstream.sinks.registry import AnySinkSettings
from tests.formats.samples import sample_event

SECRET = "c2VjcmV0"  # base64, as [source] secret_key must be
JSON_ONLY = {"azure_monitor"}  # its DCR declares the JSON event's columns and drops the rest
OCSF_ONLY = {"security_lake"}  # Parquet tables per OCSF class: nothing else fits them


def minimal(**extra: object) -> dict[str, object]:
    return {
        "source": {"access_key": "ak", "secret_key": SECRET},
        "sinks": [{"type": "stdout", "name": "out", "format": "ocsf"}],
        **extra,
    }


@pytest.mark.parametrize("fmt", ["ocsf", "ecs"])
def test_every_json_document_sink_takes_the_schema_formats(fmt):
    for model in typing.get_args(AnySinkSettings):
        kind = model.model_fields["type"].default
        allowed = typing.get_args(model.model_fields["format"].annotation)
        if kind in OCSF_ONLY:
            assert allowed == ("ocsf",), kind
            continue
        assert (fmt in allowed) is (kind not in JSON_ONLY), kind


def test_the_ocsf_version_reaches_the_sinks_encoder(tmp_path, capsysbinary):
    config = parse_config(
        minimal(ocsf={"version": "1.7.0"}, checkpoint={"path": str(tmp_path / "c.db")}), env={}
    )
    assert config.encoder_settings().ocsf.version == "1.7.0"
    (sink,) = build_sinks(config)
    line = sink.transport._encode_line(sample_event("activities"))  # type: ignore[attr-defined]
    assert orjson.loads(line)["metadata"]["version"] == "1.7.0"
    assert parse_config(minimal(), env={}).ocsf.version == "1.8.0"


def test_an_unknown_ocsf_version_is_a_config_error():
    with pytest.raises(ConfigError, match=r"ocsf\.version"):
        parse_config(minimal(ocsf={"version": "1.9.0"}), env={})
    with pytest.raises(ValidationError):
        OcsfSettings(version="1.6.0")  # type: ignore[arg-type]


def _elastic(fmt: str) -> ElasticsearchTransport:
    settings = TypeAdapter(ElasticsearchSinkSettings).validate_python(
        {"type": "elasticsearch", "name": "es", "urls": ["http://127.0.0.1:9200"], "format": fmt}
    )
    return ElasticsearchTransport(settings, EncoderSettings())


def _bulk(
    transport: ElasticsearchTransport, event: dict[str, object]
) -> tuple[dict[str, object], dict[str, object]]:
    envelope = Envelope("activities", str(event["id"]), 1714566896123456789, event)
    action, document, end = transport.encode(envelope).split(b"\n")
    assert end == b""
    return orjson.loads(action), orjson.loads(document)


def test_elasticsearch_indexes_ecs_documents_in_their_own_data_stream():
    transport = _elastic("ecs")
    assert transport.settings.target == DEFAULT_ECS_DATA_STREAM != DEFAULT_DATA_STREAM
    action, document = _bulk(transport, sample_event("activities"))
    assert action["create"]["_index"] == "logs-strongdm.activities-ecs"
    assert document["@timestamp"] == "2024-05-01T12:34:56.123456789Z"
    assert document["event"]["id"] == sample_event("activities")["id"] and document["ecs"]["version"]
    timeless = {k: v for k, v in sample_event("activities").items() if k != "timestamp"}
    assert _bulk(transport, timeless)[1]["@timestamp"] == "2024-05-01T12:34:56.123456789Z"


def test_elasticsearch_indexes_ocsf_events_with_a_timestamp():
    transport = _elastic("ocsf")
    action, document = _bulk(transport, sample_event("activities"))
    assert action["create"]["_index"] == "logs-strongdm.activities-default"
    assert document["@timestamp"] == "2024-05-01T12:34:56.123456789Z" and document["class_uid"] == 3001


def test_datadog_messages_are_the_chosen_format():
    settings = TypeAdapter(DatadogSinkSettings).validate_python(
        {"type": "datadog", "name": "dd", "api_key": "k" * 32, "format": "ecs"}
    )
    entry = orjson.loads(
        DatadogTransport(settings, None).encode(Envelope("queries", "q", 0, sample_event("queries")))
    )
    assert orjson.loads(entry["message"])["event"]["category"] == ["database"]
