"""deploy/sentinel and deploy/elastic against the events the sinks send: a field the DCR does
not declare is dropped by Azure without a word, and a field the index template does not map
is left to dynamic mapping, so both are checked against one event of every stream."""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path
from typing import Any

import pytest

from auditstream.formats import to_event
from auditstream.sdm.registry import ALL_STREAM_NAMES, STREAMS
from auditstream.sinks.elasticsearch import DEFAULT_DATA_STREAM
from tests.formats.samples import all_sample_events, content_safety_events, query_pair

ROOT = Path(__file__).resolve().parents[2]
SENTINEL = ROOT / "deploy" / "sentinel"
ELASTIC = ROOT / "deploy" / "elastic"


def sample_events() -> list[dict[str, Any]]:
    events = list(all_sample_events().values()) + content_safety_events()
    return events + [to_event(STREAMS["queries"], record) for record in query_pair()]


def sentinel_type(values: list[Any]) -> str:
    kinds = {type(v) for v in values if v is not None}
    if kinds <= {str}:
        return "string"
    if kinds <= {int}:
        return "long"
    if kinds <= {bool}:
        return "boolean"
    return "dynamic"


def test_the_dcr_declares_every_field_of_every_stream_with_its_type():
    dcr = json.loads((SENTINEL / "dcr.json").read_text())
    (rule,) = dcr["resources"]
    properties = rule["properties"]
    declared = {
        c["name"]: c["type"] for c in properties["streamDeclarations"]["Custom-StrongDMAudit"]["columns"]
    }
    assert declared.pop("TimeGenerated") == "datetime"
    values: dict[str, list[Any]] = {}
    for event in sample_events():
        for key, value in event.items():
            values.setdefault(key, []).append(value)
    assert set(values) == set(declared), "the DCR drops what it does not declare"
    assert {k: sentinel_type(v) for k, v in values.items()} == declared
    (flow,) = properties["dataFlows"]
    assert flow["streams"] == ["Custom-StrongDMAudit"] and flow["outputStream"] == "Custom-StrongDMAudit_CL"
    referenced = set(re.findall(r"\['([A-Za-z]+)'\]", flow["transformKql"]))
    assert referenced <= set(declared)


def test_the_table_has_a_column_for_everything_the_transform_outputs():
    dcr = json.loads((SENTINEL / "dcr.json").read_text())
    declared = dcr["resources"][0]["properties"]["streamDeclarations"]["Custom-StrongDMAudit"]["columns"]
    table = json.loads((SENTINEL / "table.json").read_text())["properties"]["schema"]
    assert table["name"] == "StrongDMAudit_CL"
    columns = {c["name"]: c["type"] for c in table["columns"]}
    expected = {("RecordId" if c["name"] == "id" else c["name"]): c["type"] for c in declared}
    expected = {name: {"datetime": "dateTime"}.get(kind, kind) for name, kind in expected.items()}
    assert columns == {**expected, "EventTime": "dateTime"}
    parser = (SENTINEL / "parser.kql").read_text()
    assert "StrongDMAudit_CL" in parser and "arg_max(TimeGenerated, *) by logType, RecordId" in parser


def _leaves(value: Any, path: str) -> list[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        return [
            leaf for key, item in value.items() for leaf in _leaves(item, f"{path}.{key}" if path else key)
        ]
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return [leaf for item in value for leaf in _leaves(item, path)]
    return [(path, value)]


def _json_type(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return _json_type(value[0]) if value else None
    return None  # null, {}: no mapping needed


COMPATIBLE = {
    "string": {"keyword", "text", "date_nanos", "date", "ip"},
    "long": {"long"},
    "double": {"double"},
    "boolean": {"boolean"},
}


def _mapped(mappings: dict[str, Any], path: str, kind: str) -> str | None:
    """The type ``path`` gets: explicit properties first, then the dynamic templates."""
    node: dict[str, Any] = {"properties": mappings["properties"]}
    for part in path.split("."):
        props = node.get("properties", {})
        if part not in props:
            break
        node = props[part]
        if node.get("type") in ("flattened", "flat_object") or node.get("enabled") is False:
            return "whole"
    else:
        return str(node.get("type"))
    for entry in mappings["dynamic_templates"]:
        ((_, template),) = entry.items()
        if "path_match" in template and not fnmatch.fnmatchcase(path, template["path_match"]):
            continue
        if "match" in template and not fnmatch.fnmatchcase(path.rsplit(".", 1)[-1], template["match"]):
            continue
        if "match_mapping_type" in template and template["match_mapping_type"] != kind:
            continue
        return str(template["mapping"]["type"])
    return None


@pytest.mark.parametrize("name", ["index-template.json", "index-template.opensearch.json"])
def test_the_index_template_maps_every_event_field(name):
    template = json.loads((ELASTIC / name).read_text())
    mappings = template["template"]["mappings"]
    assert template["data_stream"] == {}
    for stream in ALL_STREAM_NAMES:  # the sink's default data stream names match the pattern
        target = DEFAULT_DATA_STREAM.replace("{stream}", stream)
        assert any(fnmatch.fnmatchcase(target, p) for p in template["index_patterns"]), target
    assert mappings["properties"]["@timestamp"]["type"] in ("date", "date_nanos")
    unmapped = []
    for event in sample_events():
        assert set(event) <= set(mappings["properties"]), set(event) - set(mappings["properties"])
        for path, value in _leaves(event, ""):
            kind = _json_type(value)
            if kind is None:
                continue
            mapped = _mapped(mappings, path, kind)
            if mapped != "whole" and mapped not in COMPATIBLE[kind]:
                unmapped.append((event["logType"], path, kind, mapped))
    assert not unmapped, unmapped[:10]
    text = json.dumps(template)
    if "opensearch" in name:
        assert "flattened" not in text.replace("tags_as_flattened", "") and "flat_object" in text
    for field in ("ipAddress", "clientIp", "sourceIp"):
        assert mappings["properties"][field] == {"type": "ip", "ignore_malformed": True}
