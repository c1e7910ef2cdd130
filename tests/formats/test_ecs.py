"""format = "ecs": every stream, every SDK verb and every query category, checked against the
field definitions of ECS 9.4.0 (``tests/data/ecs/ecs_flat-9.4.0.json.gz``, see the README
there): every field outside ``strongdm.*`` is an ECS field, holds a value of its type (an
``ip`` an address, a ``date`` an RFC 3339 time, a ``long`` an integer...), is a list only
where ECS expects one, and ``event.kind``/``category``/``type``/``outcome`` take only the
values ECS allows, each ``event.type`` one its category expects."""

from __future__ import annotations

import functools
import gzip
import ipaddress
import json
import re
from pathlib import Path
from typing import Any

import orjson

from auditstream.formats import EncoderSettings, make_encoder, make_line_encoder
from auditstream.formats.cef import CefSettings
from auditstream.formats.ecs import ECS_VERSION, VENDOR, EcsEncoder
from auditstream.formats.ocsf import OcsfEncoder
from tests.formats import schema_corpus
from tests.formats.conftest import count

ECS_FLAT = Path(__file__).resolve().parents[1] / "data" / "ecs" / f"ecs_flat-{ECS_VERSION}.json.gz"
TEXT_TYPES = {"keyword", "constant_keyword", "wildcard", "match_only_text", "text"}
INTEGER_TYPES = {"long", "integer", "short", "byte", "unsigned_long"}
NUMBER_TYPES = {"float", "double", "scaled_float", "half_float"}
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})\Z")


@functools.cache
def fields() -> dict[str, Any]:
    return json.loads(gzip.decompress(ECS_FLAT.read_bytes()))  # type: ignore[no-any-return]


@functools.cache
def corpus() -> dict[str, dict[str, Any]]:
    return schema_corpus.corpus()


@functools.cache
def documents() -> dict[str, dict[str, Any]]:
    encode = make_encoder("ecs")
    return {name: orjson.loads(encode(event)) for name, event in corpus().items()}


def leaves(value: dict[str, Any], path: str = "") -> list[tuple[str, Any]]:
    found = []
    for key, item in value.items():
        name = f"{path}.{key}" if path else key
        if isinstance(item, dict) and fields().get(name, {}).get("type") not in ("object", "flattened"):
            found += leaves(item, name)
        else:
            found.append((name, item))
    return found


def value_problem(kind: str, value: Any) -> str | None:
    if kind in TEXT_TYPES:
        ok = isinstance(value, str)
    elif kind in INTEGER_TYPES:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind in NUMBER_TYPES:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif kind == "boolean":
        ok = isinstance(value, bool)
    elif kind == "ip":
        try:
            ipaddress.ip_address(value)
            ok = True
        except (TypeError, ValueError):
            ok = False
    elif kind == "date":
        ok = isinstance(value, str) and RFC3339.match(value) is not None
    elif kind in ("object", "flattened"):
        ok = isinstance(value, dict)
    else:
        return f"a type this test does not know: {kind}"
    return None if ok else f"{value!r} is not a {kind}"


def problems(doc: dict[str, Any]) -> list[str]:
    found = []
    flat = fields()
    for path, value in leaves(doc):
        if path == VENDOR or path.startswith(f"{VENDOR}."):
            continue
        spec = flat.get(path)
        if spec is None:
            found.append(f"{path}: not an ECS {ECS_VERSION} field")
            continue
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and "array" not in spec.get("normalize", []):
            found.append(f"{path}: a list where ECS expects one value")
        for item in values:
            problem = value_problem(spec["type"], item)
            if problem:
                found.append(f"{path}: {problem}")
            allowed = spec.get("allowed_values")
            if allowed and item not in {v["name"] for v in allowed}:
                found.append(f"{path}: {item!r} is not an allowed value")
    event = doc.get("event", {})
    expected = {
        v["name"]: set(v.get("expected_event_types") or ()) for v in flat["event.category"]["allowed_values"]
    }
    for category in event.get("category", []):
        for kind in event.get("type", []):
            if kind not in expected.get(category, set()):
                found.append(f"event.type {kind!r} is not one ECS expects for category {category!r}")
    for required in ("@timestamp", "ecs.version", "event.kind", "event.id", "event.dataset"):
        if required not in dict(leaves(doc)) and not (
            required == "@timestamp" and "timestamp" not in doc.get(VENDOR, {})
        ):
            found.append(f"{required} missing")
    return found


def test_the_vendored_definitions_are_the_release():
    flat = fields()
    assert len(flat) == 2605 and flat["ecs.version"]["type"] == "keyword"
    assert {v["name"] for v in flat["event.category"]["allowed_values"]} >= {
        "authentication",
        "iam",
        "configuration",
        "database",
        "session",
        "api",
        "web",
    }


def test_every_document_uses_ecs_fields_with_their_types():
    bad = {}
    for name, doc in documents().items():
        assert doc["ecs"]["version"] == ECS_VERSION
        found = problems(doc)
        if found:
            bad[name] = found
        count(f"ECS {ECS_VERSION} categories", f"{','.join(doc['event'].get('category', ['-']))}")
    assert not bad, "\n".join(f"{n}: {p}" for n, ps in list(bad.items())[:10] for p in ps[:5])


def test_the_checks_can_fail():
    good = documents()["stream activities"]
    assert problems(good) == []
    broken = {
        "invented field": {**good, "user": {**good["user"], "login": "x"}},
        "not an address": {**good, "source": {"ip": "hmac-sha256:3f1c9a"}},
        "type the category does not expect": {**good, "event": {**good["event"], "type": ["start"]}},
        "unknown category": {**good, "event": {**good["event"], "category": ["audit"]}},
        "string for a long": {**good, "event": {**good["event"], "severity": "8"}},
        "list where one value": {**good, "message": ["a", "b"]},
    }
    for what, doc in broken.items():
        assert problems(doc), what


def test_event_id_is_the_record_key_as_in_ocsf():
    ocsf = OcsfEncoder()
    for name, event in corpus().items():
        doc = documents()[name]
        assert doc["event"]["id"] == event["id"] == ocsf.to_ocsf(event)["metadata"]["original_event_uid"]


def test_categories_follow_the_ocsf_class():
    docs = documents()
    expect = {
        "verb user logged into the Admin UI": (["authentication"], ["start"], "success"),
        "verb failed login attempt from the Admin UI": (["authentication"], ["start"], "failure"),
        "verb user logged out from the Admin UI": (["authentication"], ["end"], "success"),
        "verb user added": (["iam"], ["user", "creation"], "success"),
        "verb user added to role": (["iam"], ["group", "change"], "success"),
        "verb user temporary access granted": (["iam"], ["user", "change"], "success"),
        "verb datasource deleted": (["configuration"], ["deletion"], "success"),
        "stream queries": (["database"], ["access"], "success"),
        "query pair, start": (["session"], ["start"], "success"),
        "query pair, completion": (["session"], ["end"], "success"),
        "query k8s": (["api"], ["creation"], "success"),
        "query web": (["web"], ["access"], "success"),
        "stream roles_history": (["configuration"], ["deletion"], "success"),
        "stream managed_secret_logs": (["configuration"], ["access"], "success"),
    }
    for name, (categories, types, outcome) in expect.items():
        event = docs[name]["event"]
        assert (event["category"], event["type"], event["outcome"]) == (categories, types, outcome), name


def test_what_goes_where():
    docs = documents()
    activity = docs["stream activities"]
    assert activity["@timestamp"] == "2024-05-01T12:34:56.123456789Z"
    assert activity["event"]["dataset"] == "strongdm.activities" and activity["event"]["severity"] == 8
    assert (
        activity["user"]["id"] == "a-0abcdabcdab00001"
        and activity["user"]["target"]["id"] == "a-0abcdabcdab00002"
    )
    assert activity["source"]["ip"] == "203.0.113.9"
    assert activity["user_agent"]["original"] == "strongdm-sdk-python/18.4.0"
    assert activity["related"] == {
        "user": ["alice.glick@example.com", "bob@example.com"],
        "ip": ["203.0.113.9"],
    }
    assert activity[VENDOR]["entityDetails"] == corpus()["stream activities"]["entityDetails"]
    role = docs["verb user added to role"]
    assert role["group"] == {"id": "r-0fedcba987654321", "name": "prod-dba"}
    query = docs["stream queries"]
    assert (
        query["event"]["duration"] == 12_000_000 and query["event"]["end"] == "2024-05-01T12:34:56.135802467Z"
    )
    assert query["destination"] == {
        "address": "db.internal.example.com",
        "domain": "db.internal.example.com",
        "port": 5432,
    }
    assert (
        query["user"]["target"] == {"name": "alice_ro"}
        and query["message"] == corpus()["stream queries"]["queryBody"]
    )
    web = docs["query web"]
    assert web["url"]["original"] == "https://grafana.internal.example.com/d/42/latency?orgId=1"
    assert web["http"] == {"request": {"method": "GET"}}
    hashed = docs["activity, hashed address and email"]
    assert hashed["source"] == {"address": "hmac-sha256:3f1c9a"}


def test_severities_follow_the_cef_settings_and_lines_are_lines():
    encoder = EcsEncoder(CefSettings(severity={"user suspended": 2}))
    assert encoder.to_ecs(corpus()["stream activities"])["event"]["severity"] == 2
    line = make_line_encoder("ecs", EncoderSettings())(corpus()["stream queries"])
    assert line.endswith(b"\n") and line.count(b"\n") == 1
