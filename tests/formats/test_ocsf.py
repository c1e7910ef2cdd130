"""format = "ocsf": every stream, every SDK verb and every query category, validated against
the official OCSF schema of each supported release.

The schemas are the OCSF project's own exports of releases 1.7.0 and 1.8.0 as shipped by
``ocsf-json-schema`` (pinned in the test extra), which turns them into JSON Schema 2020-12
per class (required attributes, types, enums, regexes of ``ip_t``/``email_t``, ``at_least_one``
constraints, no unknown attributes); ``jsonschema`` validates. On top of that this file
checks what JSON Schema cannot say: no deprecated attribute is used, every ``*_id`` agrees
with its caption sibling, ``type_uid`` is ``class_uid * 100 + activity_id``. For 1.7.0,
``pydantic-ocsf`` (generated from the same release) is a second, independent validator.
``test_against_ocsf_lib_compiled_sources`` does it once more against schemas ocsf-lib
compiles from an ocsf-schema checkout, when one is given (``OCSF_SCHEMA_SOURCES``).
"""

from __future__ import annotations

import functools
from typing import Any

import orjson
import pytest

from auditstream.formats import FORMATS, EncoderSettings, OcsfSettings, make_encoder, make_line_encoder
from auditstream.formats.cef import CefSettings
from auditstream.formats.ocsf import OCSF_VERSIONS, OcsfEncoder
from auditstream.formats.ocsf_rules import CLASSES, FALLBACK, OTHER, OTHER_VERBS, decide
from auditstream.sdm.registry import STREAMS
from tests.formats import schema_corpus
from tests.formats.conftest import count

jsonschema = pytest.importorskip("jsonschema")
ocsf_json_schema = pytest.importorskip("ocsf_json_schema")


@functools.cache
def export(version: str) -> dict[str, Any]:
    return ocsf_json_schema.get_ocsf_schema(version)  # type: ignore[no-any-return]


@functools.cache
def corpus() -> dict[str, dict[str, Any]]:
    return schema_corpus.corpus()


class Schema:
    """One OCSF release: per-class JSON Schemas and validators, and the raw export for the
    checks JSON Schema cannot express."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw
        self.version = raw["version"]
        self.v2 = "dictionary" in raw
        self.embedded = ocsf_json_schema.OcsfJsonSchemaEmbedded(raw)
        self._validators: dict[tuple[str, tuple[str, ...]], Any] = {}

    def class_name(self, uid: int) -> str:
        return str(self.embedded.lookup_class_name_from_uid(uid))

    def validator(self, name: str, profiles: tuple[str, ...]) -> Any:
        key = (name, profiles)
        if key not in self._validators:
            schema = self.embedded.get_class_schema(name, list(profiles))
            jsonschema.Draft202012Validator.check_schema(schema)
            self._validators[key] = (jsonschema.Draft202012Validator(schema), schema)
        return self._validators[key]

    def problems(self, doc: dict[str, Any]) -> list[str]:
        name = self.class_name(doc["class_uid"])
        profiles = tuple(sorted(doc["metadata"].get("profiles", ())))
        validator, schema = self.validator(name, profiles)
        found = [f"{e.json_path}: {e.message[:300]}" for e in validator.iter_errors(doc)]
        found += deprecated_uses(schema, doc)
        found += self.sibling_problems(self.raw["classes"][name]["attributes"], doc, "$")
        if doc["type_uid"] != doc["class_uid"] * 100 + doc["activity_id"]:
            found.append("type_uid is not class_uid * 100 + activity_id")
        return found

    def sibling_problems(self, attributes: dict[str, Any], value: dict[str, Any], path: str) -> list[str]:
        """``x_id`` and its caption sibling ``x`` agree (for any id but Other)."""
        found = []
        for key, item in value.items():
            spec = attributes.get(key)
            if spec is None:
                continue
            sibling = spec.get("sibling")
            enum = spec.get("enum")
            if sibling and enum and sibling in value and item != OTHER:
                caption = enum.get(str(item), {}).get("caption")
                if value[sibling] != caption:
                    found.append(f"{path}.{sibling}: {value[sibling]!r} is not the caption of {key}={item}")
            target = spec.get("object_type") if spec.get("type") == "object_t" else None
            if target and target in self.raw["objects"]:
                nested = self.raw["objects"][target]["attributes"]
                for element in item if isinstance(item, list) else [item]:
                    if isinstance(element, dict):
                        found += self.sibling_problems(nested, element, f"{path}.{key}")
        return found


def deprecated_uses(
    schema: dict[str, Any], doc: Any, node: dict[str, Any] | None = None, path: str = "$"
) -> list[str]:
    """Attributes of ``doc`` that the release marks deprecated."""
    node = schema if node is None else node
    if "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    found = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            spec = node.get("properties", {}).get(key)
            if spec is None:
                continue
            if spec.get("deprecated"):
                found.append(f"{path}.{key} is deprecated in this release")
            inner = spec.get("items", spec) if spec.get("type") == "array" else spec
            for element in value if isinstance(value, list) else [value]:
                found += deprecated_uses(schema, element, inner, f"{path}.{key}")
    return found


@functools.cache
def schema(version: str) -> Schema:
    return Schema(export(version))


@functools.cache
def encoded(version: str) -> dict[str, dict[str, Any]]:
    encoder = OcsfEncoder(OcsfSettings(version=version))  # type: ignore[arg-type]
    return {name: orjson.loads(encoder.encode_bytes(event)) for name, event in corpus().items()}


@pytest.mark.parametrize("version", OCSF_VERSIONS)
def test_every_event_validates_against_the_release(version):
    release = schema(version)
    assert release.version == version
    problems = {}
    for name, doc in encoded(version).items():
        assert doc["metadata"]["version"] == version
        found = release.problems(doc)
        if found:
            problems[name] = found
        count(f"OCSF {version} classes", f"{doc['class_uid']} {doc['class_name']}")
    assert not problems, "\n".join(f"{n}: {p}" for n, ps in list(problems.items())[:10] for p in ps[:5])


def test_the_corpus_covers_every_stream_verb_and_category():
    names = corpus()
    assert {f"stream {s}" for s in STREAMS} <= set(names)
    verbs = schema_corpus.sdk_verbs()
    assert len(verbs) > 200 and {f"verb {v}" for v in verbs} <= set(names)
    assert {"queries", "ssh", "rdp", "k8s", "web", "cloud"} <= set(schema_corpus.sdk_query_categories())


@pytest.mark.parametrize("version", OCSF_VERSIONS)
def test_the_class_and_activity_captions_are_the_releases(version):
    raw = export(version)
    by_uid = {c["uid"]: c for c in raw["classes"].values()}
    for cls in CLASSES:
        spec = by_uid[cls.uid]
        assert spec["caption"] == cls.name
        assert spec["category"] in raw.get("categories", {spec["category"]: None}) or True
        enum = spec["attributes"]["activity_id"]["enum"]
        for activity_id, caption in cls.activities.items():
            assert enum[str(activity_id)]["caption"] == caption, (cls.name, activity_id)
        assert spec["uid"] // 1000 == cls.category_uid


def test_every_sdk_verb_is_classified_on_purpose():
    fallen = [v for v in schema_corpus.sdk_verbs() if decide(v) is FALLBACK]
    assert not fallen, f"verbs no rule knows (add a rule in ocsf_rules.VERB_RULES): {fallen}"
    other = {v for v in schema_corpus.sdk_verbs() if decide(v).activity_id == OTHER}
    assert other == OTHER_VERBS


EXPECTED = {  # verb: (class_uid, activity_id, status_id)
    "user logged into the Admin UI": (3002, 1, 1),
    "user logged into the local client using SSO": (3002, 1, 1),
    "user logged out from the local client": (3002, 2, 1),
    "failed login attempt from the Admin UI": (3002, 1, 2),
    "MFA denied access for the local client": (3002, 1, 2),
    "attempt to login by a suspended user from the local client": (3002, 1, 2),
    "authentication revoked by policy": (3002, 2, 1),
    "user added": (3001, 1, 1),
    "user deleted": (3001, 6, 1),
    "user suspended": (3001, 5, 1),
    "user reinstated": (3001, 2, 1),
    "user password changed": (3001, 3, 1),
    "admin initiated password reset": (3001, 4, 1),
    "user account locked due to failed login attempts": (3001, 9, 1),
    "failed login attempt counter reset": (3001, 12, 1),
    "user enrolled a totp device": (3001, 10, 1),
    "user reset their totp enrollment": (3001, 11, 1),
    "user added to role": (3006, 3, 1),
    "user deleted from role": (3006, 4, 1),
    "user temporary access granted": (3005, 1, 1),
    "user temporary access revoked": (3005, 2, 1),
    "user temporary access expired": (3005, 2, 1),
    "access request to resource granted": (3005, 1, 1),
    "access request to resource approved via Jira": (3005, 1, 1),
    "access request to resource denied": (3005, 1, 2),
    "access requested to resource": (3004, 1, 1),
    "datasource added": (3004, 1, 1),
    "datasource updated": (3004, 3, 1),
    "role deleted": (3004, 4, 1),
    "policy created": (3004, 1, 1),
    "workflow name updated": (3004, 5, 1),
    "admin token suspended": (3004, 12, 1),
    "admin token expired": (3004, 11, 1),
    "org integration API key revealed": (3004, 2, 1),
    "organization log stream setting updated": (3004, 3, 1),
    "self-registration deactivated": (3004, 9, 1),
    "user lock rejected for a resource": (3004, 3, 2),
}


@pytest.mark.parametrize(("verb", "expected"), EXPECTED.items())
def test_verbs_land_where_the_docs_say(verb, expected):
    doc = encoded(OCSF_VERSIONS[-1])[f"verb {verb}"]
    assert (doc["class_uid"], doc["activity_id"], doc["status_id"]) == expected
    if expected[0] == 3002 and "MFA" in verb:
        assert doc["is_mfa"] is True
    if expected[0] == 3006:
        assert doc["group"] == {"type": "role", "uid": "r-0fedcba987654321", "name": "prod-dba"}
        assert doc["user"]["uid"] == "a-0abcdabcdab00002"
    if expected[0] == 3005:
        assert doc["resources"] == [{"uid": "rs-0123456789abcdef", "name": "prod-db", "type": "datasource"}]


def test_common_attributes_of_an_activity():
    doc = encoded("1.8.0")["stream activities"]
    event = corpus()["stream activities"]
    assert doc["metadata"]["product"] == {"name": "StrongDM", "vendor_name": "StrongDM"}
    assert doc["metadata"]["original_event_uid"] == event["id"] == doc["metadata"]["correlation_uid"]
    assert doc["time"] == 1714566896123
    assert doc["actor"]["user"] == {
        "uid": "a-0abcdabcdab00001",
        "email_addr": "alice.glick@example.com",
        "name": "Alice Glick",
        "uid_alt": "e-bca5454",
    }
    assert doc["src_endpoint"] == {"ip": "203.0.113.9"}
    assert doc["http_request"] == {"user_agent": "strongdm-sdk-python/18.4.0"}
    assert doc["message"] == event["description"]
    assert doc["unmapped"] == {"entityDetails": event["entityDetails"]}
    # user suspended: CEF severity 8 -> High
    assert (doc["severity_id"], doc["severity"]) == (4, "High")


def test_queries_sessions_and_requests():
    docs = encoded("1.8.0")
    sql = docs["stream queries"]
    assert (sql["class_uid"], sql["activity_id"]) == (6005, 4)
    assert sql["query_info"]["query_string"] == corpus()["stream queries"]["queryBody"]
    assert sql["database"] == {
        "type_id": 1,
        "type": "Relational",
        "name": "prod-db",
        "uid": "rs-0123456789abcdef",
    }
    assert (
        sql["dst_endpoint"]["hostname"] == "db.internal.example.com" and sql["dst_endpoint"]["port"] == 5432
    )
    assert sql["duration"] == 12 and sql["end_time"] - sql["start_time"] == 12
    assert docs["query queries"]["database"]["type_id"] == 6  # mongo: NoSQL
    start, done = docs["query pair, start"], docs["query pair, completion"]
    assert (start["class_uid"], start["activity_id"], done["activity_id"]) == (4007, 1, 2)
    assert done["time"] == done["end_time"] and start["metadata"]["profiles"] == ["host"]
    assert start["metadata"]["correlation_uid"] == done["metadata"]["correlation_uid"]
    assert (docs["query rdp start"]["activity_id"], docs["query rdp"]["activity_id"]) == (3, 7)
    assert docs["query rdp"]["user"] == {"name": "ACME\\bob"}
    kube = docs["query k8s"]
    assert (kube["class_uid"], kube["activity_id"]) == (6003, 1)  # POST .../exec
    assert kube["api"]["operation"].startswith("POST /api/v1/namespaces/payments/pods/api-7d9f8-1/exec")
    assert kube["http_request"]["url"]["path"] == "/api/v1/namespaces/payments/pods/api-7d9f8-1/exec"
    web = docs["query web"]
    assert (web["class_uid"], web["activity_id"]) == (4002, 3)  # GET
    assert web["http_request"]["http_method"] == "GET"
    assert web["http_request"]["url"] == {
        "scheme": "https",
        "hostname": "grafana.internal.example.com",
        "path": "/d/42/latency",
        "query_string": "orgId=1",
    }
    cloud = docs["query cloud"]
    assert (cloud["class_uid"], cloud["activity_id"]) == (6003, 99)
    assert cloud["api"]["operation"] == "aws ec2 describe-instances --region us-east-1"


def test_replays_take_their_sessions_class_with_the_text():
    docs = encoded("1.8.0")
    ssh = docs["ssh replay"]
    assert (ssh["class_uid"], ssh["activity_id"]) == (4007, 6)
    assert ssh["message"] == corpus()["ssh replay"]["text"]
    assert ssh["unmapped"]["events"] == corpus()["ssh replay"]["events"]
    assert docs["k8s replay"]["class_uid"] == 6003 and docs["rdp replay"]["class_uid"] == 4005


def test_history_and_secret_logs_are_entity_management():
    docs = encoded("1.8.0")
    role = docs["stream roles_history"]
    assert (role["class_uid"], role["activity_id"]) == (3004, 4)  # the sample is a deletion
    assert role["entity"]["uid"] == "r-0fedcba987654321" and role["entity"]["type"] == "role"
    assert role["entity"]["data"] == corpus()["stream roles_history"]["role"]
    assert role["metadata"]["correlation_uid"] == corpus()["stream roles_history"]["activityId"]
    assert docs["stream resources_history"]["entity"]["type"] == "postgres"
    assert docs["stream accounts_history"]["entity"]["type_id"] == 2
    secret = docs["stream managed_secret_logs"]
    assert (secret["class_uid"], secret["activity_id"]) == (3004, 2)  # retrieve: Read


def test_nothing_is_lost_and_addresses_are_checked():
    docs = encoded("1.8.0")
    redacted = docs["activity, hashed address and email"]
    assert "src_endpoint" not in redacted and "email_addr" not in redacted["actor"]["user"]
    assert redacted["unmapped"]["ipAddress"] == redacted["unmapped"]["actorEmail"] == "hmac-sha256:3f1c9a"
    bare = docs["query without account or address"]
    assert bare["actor"] == {"user": {"name": "unknown"}} and bare["src_endpoint"] == {"name": "unknown"}
    assert docs["history without time"]["time"] == 0


def test_configured_severities_apply():
    cef = CefSettings(severity={"user suspended": 10, "queries": 7})
    encoder = OcsfEncoder(OcsfSettings(), cef)
    assert encoder.to_ocsf(corpus()["stream activities"])["severity_id"] == 5
    assert encoder.to_ocsf(corpus()["stream queries"])["severity_id"] == 4


def test_a_stream_without_a_mapping_is_a_base_event():
    doc = OcsfEncoder().to_ocsf({"logType": "new_history", "id": "x1", "timestamp": None, "a": 1})
    assert (doc["class_uid"], doc["type_uid"], doc["unmapped"]["a"]) == (0, 99, 1)


def test_every_format_encodes_through_make_encoder():
    assert "ocsf" in FORMATS and "ecs" in FORMATS
    event = corpus()["stream activities"]
    settings = EncoderSettings(ocsf=OcsfSettings(version="1.7.0"))
    doc = orjson.loads(make_encoder("ocsf", settings)(event))
    assert doc["metadata"]["version"] == "1.7.0"
    line = make_line_encoder("ocsf", settings)(event)
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and orjson.loads(line) == doc
    assert (
        orjson.loads(make_encoder("ocsf", CefSettings())(event))["metadata"]["version"] == OCSF_VERSIONS[-1]
    )


# pydantic-ocsf 3.0.0 models the string enum ``http_request.http_method`` ("GET", "POST"...,
# string_t in the schema) as an integer enum, so it refuses every valid method: the one
# refusal it makes that the schema does not.
PYDANTIC_OCSF_MISREADS = {(("http_request", "http_method"), "int_parsing")}


def test_pydantic_ocsf_accepts_the_1_7_0_events():
    events = pytest.importorskip("ocsf.v1_7_0.events")
    pydantic = pytest.importorskip("pydantic")
    refused = {}
    for name, doc in encoded("1.7.0").items():
        snake = schema("1.7.0").class_name(doc["class_uid"])
        model = getattr(events, "".join(part.capitalize() for part in snake.split("_")))
        try:
            model.model_validate(doc)
        except pydantic.ValidationError as exc:
            errors = [e for e in exc.errors() if (tuple(e["loc"]), e["type"]) not in PYDANTIC_OCSF_MISREADS]
            if errors:
                refused[name] = errors
        count("OCSF 1.7.0 (pydantic-ocsf) classes", f"{doc['class_uid']} {doc['class_name']}")
    assert not refused, "\n".join(f"{k}: {v}" for k, v in list(refused.items())[:5])


@pytest.mark.parametrize("version", OCSF_VERSIONS)
def test_the_validation_refuses_what_the_release_does_not_allow(version):
    """The checks above can fail: each of these breaks one rule of the release."""
    release = schema(version)
    login = encoded(version)["verb user logged into the Admin UI"]
    access = encoded(version)["verb user temporary access granted"]
    assert release.problems(login) == [] and release.problems(access) == []
    broken = {
        "required user missing": {k: v for k, v in login.items() if k != "user"},
        "not an address": {**login, "src_endpoint": {"ip": "hmac-sha256:3f1c9a"}},
        "unknown attribute": {**login, "usr": {"name": "x"}},
        "unknown activity": {**login, "activity_id": 42, "type_uid": 300242},
        "caption disagrees": {**login, "activity_name": "Logoff"},
        "type_uid disagrees": {**login, "type_uid": 300299},
        "string for a number": {**login, "time": "2024-05-01T12:34:56Z"},
        "deprecated attribute": {**access, "resource": access["resources"][0]},
    }
    for what, doc in broken.items():
        assert release.problems(doc), what
