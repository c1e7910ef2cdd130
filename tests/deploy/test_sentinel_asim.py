"""deploy/sentinel/asim: ASIM parsers (Authentication, User Management, Audit Event) over
StrongDMAudit_CL.

Every parser is analyzed by Microsoft's own KQL analyzer (Kusto.Language, pinned in
tests/deploy/kql; node and npm must be there, a missing one fails): no error or warning, no
column that table.json (or the parser itself) does not define, and a result with every field
its ASIM schema makes mandatory, with the schema's types. The schema facts below are those of
Microsoft's ASIM schema references (the versions named) and of the unifying parsers'
ParserParams in Azure-Sentinel/Parsers/ASim<Schema>/Parsers/im<Schema>.yaml.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from strongdm import constants

from auditstream.sdm.registry import STREAMS
from tests.deploy.asim import ARM, SENTINEL, analyze, arm_text, declarations, parsers, table_columns
from tests.deploy.test_splunk_ta import SIGN_INS, SIGN_OUTS

COMMON_MANDATORY = {
    "EventCount": "int",
    "EventStartTime": "datetime",
    "EventEndTime": "datetime",
    "EventType": "string",
    "EventResult": "string",
    "EventProduct": "string",
    "EventVendor": "string",
    "EventSchema": "string",
    "EventSchemaVersion": "string",
    "Dvc": "string",
}
SCHEMAS: dict[str, dict[str, Any]] = {
    "Authentication": {
        "version": "0.1.4",
        "mandatory": COMMON_MANDATORY,
        # recommended fields this source has
        "also": ("EventResultDetails", "EventSeverity", "EventUid", "TargetUsername", "SrcIpAddr", "Src"),
        "event_types": {"Logon", "Logoff", "Elevate"},
        "parameters": {
            "starttime": "datetime",
            "endtime": "datetime",
            "username_has_any": "dynamic",
            "targetappname_has_any": "dynamic",
            "srcipaddr_has_any_prefix": "dynamic",
            "srchostname_has_any": "dynamic",
            "eventtype_in": "dynamic",
            "eventresultdetails_in": "dynamic",
            "eventresult": "string",
        },
    },
    "UserManagement": {
        "version": "0.1.2",
        "mandatory": {**COMMON_MANDATORY, "EventSeverity": "string", "ActorUsername": "string"},
        "also": ("EventUid", "TargetUsername", "SrcIpAddr", "Src"),
        "event_types": {
            "UserCreated",
            "UserDeleted",
            "UserModified",
            "UserLocked",
            "UserUnlocked",
            "UserDisabled",
            "UserEnabled",
            "PasswordChanged",
            "PasswordReset",
            "GroupCreated",
            "GroupDeleted",
            "GroupModified",
            "UserAddedToGroup",
            "UserRemovedFromGroup",
            "GroupEnumerated",
            "UserRead",
            "GroupRead",
        },
        "parameters": {
            "starttime": "datetime",
            "endtime": "datetime",
            "srcipaddr_has_any_prefix": "dynamic",
            "targetusername_has_any": "dynamic",
            "actorusername_has_any": "dynamic",
            "eventtype_in": "dynamic",
        },
    },
    "AuditEvent": {
        "version": "0.1.2",
        "mandatory": {**COMMON_MANDATORY, "Operation": "string", "Object": "string"},
        "also": ("EventSeverity", "EventUid", "ActorUsername", "NewValue", "SrcIpAddr", "ObjectType"),
        "event_types": {
            "Set",
            "Read",
            "Create",
            "Delete",
            "Execute",
            "Install",
            "Clear",
            "Enable",
            "Disable",
            "Initialize",
            "Start",
            "Stop",
            "Other",
        },
        "parameters": {
            "starttime": "datetime",
            "endtime": "datetime",
            "srcipaddr_has_any_prefix": "dynamic",
            "eventtype_in": "dynamic",
            "eventresult": "string",
            "actorusername_has_any": "dynamic",
            "operation_has_any": "dynamic",
            "object_has_any": "dynamic",
            "newvalue_has_any": "dynamic",
        },
    },
}
# Every source-specific parser also takes these (the unifying parsers pass them).
CONTROL = {"disabled": "bool", "pack": "bool"}
EVENT_RESULTS = {"Success", "Partial", "Failure", "NA"}


@pytest.fixture(scope="module")
def analysis() -> dict[str, dict[str, Any]]:
    return analyze({name: declarations(p) + p["ParserQuery"] for name, p in parsers().items()})


def test_every_schema_has_a_filtering_and_a_parameterless_parser_named_as_asim_says() -> None:
    found = parsers()
    assert set(found) == {f"{kind}{schema}StrongDM" for schema in SCHEMAS for kind in ("vim", "ASim")}
    for name, parser in found.items():
        schema = parser["Normalization"]["Schema"]
        assert name.endswith(f"{schema}StrongDM"), name
        assert parser["Normalization"]["Version"] == SCHEMAS[schema]["version"], name
        assert parser["Product"]["Name"] == "StrongDM" and parser["Parser"]["Title"] and parser["Description"]
        prefix = "_Im_" if name.startswith("vim") else "_ASim_"
        assert parser["EquivalentBuiltInParser"] == f"{prefix}{schema}_StrongDM"
        if name.startswith("ASim"):  # parameter-less: only disabled and pack, and it calls its vim parser
            assert {p["Name"]: p["Type"] for p in parser["ParserParams"]} == CONTROL
            assert parser["ParserQuery"].strip() == f"vim{schema}StrongDM(disabled = disabled, pack = pack)"


@pytest.mark.parametrize("schema", SCHEMAS)
def test_filtering_parsers_take_the_standard_parameters(schema: str) -> None:
    parser = parsers()[f"vim{schema}StrongDM"]
    params = {p["Name"]: p["Type"] for p in parser["ParserParams"]}
    assert params == {**SCHEMAS[schema]["parameters"], **CONTROL}
    query = parser["ParserQuery"]
    for name in params:  # declared by the function and passed on by the final call
        assert re.search(rf"\b{name}: {params[name]}=", query), name
        assert re.search(rf"\b{name} = {name}\b", query), name
    assert "| where not(disabled)" in query


@pytest.mark.parametrize("schema", SCHEMAS)
def test_kusto_language_finds_no_error_and_every_mandatory_field(
    schema: str, analysis: dict[str, dict[str, Any]]
) -> None:
    for name in (f"vim{schema}StrongDM", f"ASim{schema}StrongDM"):
        result = analysis[name]
        assert result["diagnostics"] == [], name
        columns = dict(result["columns"])
        spec = SCHEMAS[schema]
        assert {f: columns.get(f) for f in spec["mandatory"]} == spec["mandatory"], name
        assert set(spec["also"]) <= set(columns), name
        assert columns["TimeGenerated"] == "datetime" and "Type" in columns
    query = parsers()[f"vim{schema}StrongDM"]["ParserQuery"]
    assert f'EventSchema = "{schema}"' in query
    assert f'EventSchemaVersion = "{SCHEMAS[schema]["version"]}"' in query
    event_types = set(re.findall(r'"([A-Z]\w+)"', _section(query, "EventType")))
    allowed = SCHEMAS[schema]["event_types"]
    assert event_types and event_types <= allowed, event_types - allowed
    results = set(re.findall(r'EventResult = (?:iff\([^,]+, )?"(\w+)"(?:, "(\w+)")?', query))
    assert {r for pair in results for r in pair if r} <= EVENT_RESULTS


def _section(query: str, field: str) -> str:
    """The text that gives ``field`` its values: the assignments of it up to the next one, or
    the lookup datatable (verb, value) that does."""
    if "datatable" in query:
        return " ".join(f'"{value}"' for value in re.findall(r'^\s+"[^"]+", "(\w+)",?$', query, re.M))
    return "\n".join(re.findall(rf"\b{field} = (.*?)(?=\n\s+\w+ = |\n\s+\||\Z)", query, re.S))


def test_the_analysis_fails_on_a_column_the_table_lacks() -> None:
    """The check above can fail: without ipAddress in the table, the parsers that read it break."""
    columns = table_columns()
    del columns["ipAddress"]
    found = parsers()
    parser = found["vimAuthenticationStrongDM"]
    result = analyze({"q": declarations(parser) + parser["ParserQuery"]}, columns=columns)
    messages = [d["message"] for d in result["q"]["diagnostics"]]
    assert any("'ipAddress'" in m for m in messages), messages
    result = analyze({"q": "StrongDMAudit_CL | project NoSuchColumn"})
    assert result["q"]["diagnostics"], result


def test_the_sign_in_verbs_are_those_of_the_splunk_add_on() -> None:
    query = parsers()["vimAuthenticationStrongDM"]["ParserQuery"]
    patterns = dict(re.findall(r'let (\w+) = @"([^"]+)";', query))
    verbs = {v for k, v in vars(constants.ActivityVerb).items() if k.isupper() and isinstance(v, str)}
    for verb in verbs:
        sign_in = re.search(patterns["SignIn"], verb) or re.search(patterns["SignInFailure"], verb)
        sign_out = re.search(patterns["SignOut"], verb)
        assert bool(sign_in) == (verb in SIGN_INS), verb
        assert bool(sign_out) == (verb in SIGN_OUTS), verb
        if sign_in:
            failure = bool(re.search(patterns["SignInFailure"], verb))
            assert failure == (SIGN_INS[verb] == "failure"), verb


def test_user_management_maps_real_verbs_to_schema_event_types() -> None:
    query = parsers()["vimUserManagementStrongDM"]["ParserQuery"]
    table = re.findall(r'^\s+"([^"]+)", "(\w+)",?$', query, re.M)
    verbs = {v for k, v in vars(constants.ActivityVerb).items() if k.isupper() and isinstance(v, str)}
    assert len(table) > 30
    assert {verb for verb, _ in table} <= verbs, {verb for verb, _ in table} - verbs
    assert {kind for _, kind in table} <= SCHEMAS["UserManagement"]["event_types"]
    assert len({verb for verb, _ in table}) == len(table)  # each verb once


def test_the_audit_parser_reads_the_entity_of_every_history_stream() -> None:
    query = parsers()["vimAuditEventStrongDM"]["ParserQuery"]
    columns = table_columns()
    for name, spec in STREAMS.items():
        if name.endswith("_history"):
            key = spec.record_class.DESCRIPTOR.fields_by_name[spec.entity_field].json_name
            assert f"logType == \"{name}\", ['{key}']," in query, name
            assert columns[key] == "dynamic", key


def test_the_arm_template_is_the_yaml_and_well_formed() -> None:
    assert ARM.read_text() == arm_text(), "run: python -m tests.deploy.asim"
    template = json.loads(ARM.read_text())
    assert set(template["parameters"]) == {"Workspace", "WorkspaceRegion"}
    found = parsers()
    assert len(template["resources"]) == len(found)
    for resource in template["resources"]:
        properties = resource["properties"]
        name = properties["FunctionAlias"]
        assert resource["type"] == "Microsoft.OperationalInsights/workspaces/savedSearches"
        assert resource["name"] == f"[concat(parameters('Workspace'), '/{name}')]"
        assert properties["query"] == found[name]["ParserQuery"] and properties["category"] == "ASIM"
        declared = [p.split(":")[0] for p in properties["functionParameters"].split(",")]
        assert declared == [p["Name"] for p in found[name]["ParserParams"]]


def test_the_readme_says_how_to_add_them_to_the_unifying_parsers() -> None:
    readme = (SENTINEL / "README.md").read_text()
    for schema, spec in SCHEMAS.items():
        assert f"Im_{schema}Custom" in readme and f"ASim{schema}StrongDM" in readme, schema
        line = next(line for line in readme.splitlines() if line.strip().startswith(f"vim{schema}StrongDM("))
        passed = re.findall(r"(\w+)=\1\b", line)
        assert set(passed) == set(spec["parameters"]) | {"pack"}, (schema, passed)
    assert yaml.safe_load((SENTINEL / "asim" / "vimAuthenticationStrongDM.yaml").read_text())
