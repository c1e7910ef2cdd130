"""deploy/elastic/index-template.ecs.json against the documents the elasticsearch sink sends
with ``format = "ecs"``: every ECS field is mapped with the type ECS gives it (so Elastic's
detection rules and dashboards, written for ECS, find it), every vendor field under
``strongdm.*`` is mapped like the JSON event (index-template.json), and the template wins
over the JSON one for the ECS data streams only."""

from __future__ import annotations

import fnmatch
import gzip
import json
from pathlib import Path
from typing import Any

import orjson

from auditstream.formats import make_encoder
from auditstream.formats.ecs import ECS_VERSION, VENDOR
from auditstream.sdm.registry import ALL_STREAM_NAMES
from auditstream.sinks.elasticsearch import DEFAULT_DATA_STREAM, DEFAULT_ECS_DATA_STREAM
from tests.deploy.test_siem_deploy import COMPATIBLE, _json_type, _leaves, _mapped
from tests.formats import schema_corpus

ROOT = Path(__file__).resolve().parents[2]
ELASTIC = ROOT / "deploy" / "elastic"
ECS_FLAT = ROOT / "tests" / "data" / "ecs" / f"ecs_flat-{ECS_VERSION}.json.gz"
# ECS types and what the template may map them as: dates keep their nanoseconds.
SAME = {"date": {"date", "date_nanos"}}


def template() -> dict[str, Any]:
    return json.loads((ELASTIC / "index-template.ecs.json").read_text())  # type: ignore[no-any-return]


def documents() -> list[dict[str, Any]]:
    encode = make_encoder("ecs")
    return [orjson.loads(encode(event)) for event in schema_corpus.corpus().values()]


def test_the_template_applies_to_the_ecs_data_streams_only():
    ecs, plain = template(), json.loads((ELASTIC / "index-template.json").read_text())
    assert ecs["data_stream"] == {} and ecs["priority"] > plain["priority"]
    for stream in ALL_STREAM_NAMES:
        ecs_target = DEFAULT_ECS_DATA_STREAM.replace("{stream}", stream)
        json_target = DEFAULT_DATA_STREAM.replace("{stream}", stream)
        assert any(fnmatch.fnmatchcase(ecs_target, p) for p in ecs["index_patterns"]), ecs_target
        assert not any(fnmatch.fnmatchcase(json_target, p) for p in ecs["index_patterns"]), json_target


def test_every_ecs_field_is_mapped_with_its_ecs_type():
    flat = json.loads(gzip.decompress(ECS_FLAT.read_bytes()))
    mappings = template()["template"]["mappings"]
    wrong = set()
    for doc in documents():
        for path, value in _leaves(doc, ""):
            if path.startswith(f"{VENDOR}.") or _json_type(value) is None:
                continue
            node: dict[str, Any] = {"properties": mappings["properties"]}
            for part in path.split("."):
                node = node.get("properties", {}).get(part, {})
            expected = flat[path]["type"]
            if node.get("type") not in SAME.get(expected, {expected}):
                wrong.add((path, node.get("type"), expected))
            if expected == "ip":
                assert node.get("ignore_malformed") is True, path
    assert not wrong, sorted(wrong)


def test_every_vendor_field_is_mapped_like_the_json_event():
    mappings = template()["template"]["mappings"]
    unmapped = set()
    for doc in documents():
        for path, value in _leaves(doc[VENDOR], VENDOR):
            kind = _json_type(value)
            if kind is None:
                continue
            mapped = _mapped(mappings, path, kind)
            if mapped != "whole" and mapped not in COMPATIBLE[kind]:
                unmapped.add((path, kind, mapped))
    assert not unmapped, sorted(unmapped)[:10]
    for field in ("ipAddress", "clientIp", "sourceIp"):
        assert mappings["properties"][VENDOR]["properties"][field]["type"] == "ip"
