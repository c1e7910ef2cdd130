"""deploy/splunk: the add-on that maps auditstream's HEC events to the CIM Authentication,
Change and Databases data models.

Two kinds of check. splunk-appinspect 4.3.1 (the test extra installs it; a missing one fails)
vets the package, its default checks and Splunk Cloud's. And the mapping itself: every
sample event of every stream, as the splunk_hec sink encodes it, goes through a model of
Splunk's search-time pipeline (tests/deploy/splunk.py) under every way KV_MODE=json may
represent nulls and empty strings, and must land in its event types with the CIM tags and
fields it should have. The CIM required fields are those of pytest-splunk-addon's data model
definitions (Splunk's CIM compliance tests).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from strongdm import constants

from auditstream.formats import make_encoder, to_event
from auditstream.formats.cef_mapping import outcome
from auditstream.sdm.registry import STREAMS
from auditstream.sinks.base import Envelope
from auditstream.sinks.splunk_hec import SplunkHecSinkSettings, SplunkHecTransport
from tests.deploy.checks import APPINSPECT_BAD, ROOT, run_appinspect
from tests.deploy.splunk import EXTRACTIONS, AddOn, Extraction, Result, compile_eval, read_conf
from tests.formats.samples import DELETED, all_sample_events, content_safety_events, query_pair

APP = ROOT / "deploy" / "splunk" / "TA-strongdm-auditstream"
SOURCETYPE = "strongdm:audit"
ENCODE = make_encoder("json")

# CIM data models, as pytest-splunk-addon's data_models/*.json define them ("required").
AUTHENTICATION_REQUIRED = ("action", "app", "dest", "src", "user")
CHANGE_REQUIRED = (
    "action",
    "change_type",
    "command",
    "dest",
    "dvc",
    "object",
    "object_attrs",
    "object_category",
    "object_id",
    "src",
    "status",
    "user",
    "vendor_product",
)
CHANGE_ACTIONS = {"acl_modified", "cleared", "created", "deleted", "modified", "read", "stopped", "updated"}
# Databases requires nothing; these make a query event worth having.
DATABASE_FIELDS = ("query", "query_id", "user", "dest")
CIM_TAGS = {"authentication", "change", "account", "audit", "database", "query"}
# What the events cannot give (README: "What the Change events lack"): no record says which
# attributes a change touched; a history record names no actor and no address (its activity,
# activityId = id, does); a secret log carries no address.
CHANGE_UNAVAILABLE = {
    "activities": {"object_attrs"},
    "history": {"object_attrs", "command", "src", "user"},
    "accounts_history": {"object_attrs", "command", "src"},
    "managed_secret_logs": {"object_attrs", "src"},
}

# StrongDM's sign-in verbs (strongdm.constants.ActivityVerb) and the CIM action of each.
SIGN_INS = {
    "user logged into the Admin UI": "success",
    "user logged into the Admin UI using SSO": "success",
    "user logged into the local client": "success",
    "user logged into the local client using SSO": "success",
    "parent admin logged into the child org": "success",
    "failed login attempt from the Admin UI": "failure",
    "failed login attempt from the local client": "failure",
    "MFA denied access for the Admin UI": "failure",
    "MFA denied access for the local client": "failure",
    "attempt to login by a suspended user from the Admin UI": "failure",
    "attempt to login by a suspended user from the local client": "failure",
    "attempt to login by a suspended service account from the local client": "failure",
    "attempted to login by a service account from the Admin UI": "failure",
    "attempted to login by a suspended service account from the Admin UI": "failure",
}
SIGN_OUTS = {"user logged out from the Admin UI", "user logged out from the local client"}
AUDIT_CHANGES = {
    "organization logging configuration updated",
    "organization log stream setting updated",
    "discard replays updated",
    "public key updated",
}


@pytest.fixture(scope="module")
def addon() -> AddOn:
    return AddOn(APP, SOURCETYPE)


def sent(event: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The event as Splunk indexes it from the sink's HEC envelope: (_raw, its parse)."""
    settings = SplunkHecSinkSettings(
        name="splunk",
        url="https://splunk.example.com:8088",
        token="00000000-0000-0000-0000-000000000000",  # type: ignore[arg-type]
        sourcetype=SOURCETYPE,
    )
    record = Envelope(event["logType"], "k", 1_714_566_896_000_000_000, event)
    envelope = json.loads(SplunkHecTransport(settings, None).encode(record))
    assert envelope["sourcetype"] == SOURCETYPE
    return ENCODE(envelope["event"]).decode(), envelope["event"]


def evaluate(addon: AddOn, event: dict[str, Any], how: Extraction) -> Result:
    raw, parsed = sent(event)
    return addon.evaluate(raw, parsed, how)


def sample_events() -> list[dict[str, Any]]:
    events = list(all_sample_events().values()) + content_safety_events()
    return events + [to_event(STREAMS["queries"], record) for record in query_pair()]


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def expected(event: dict[str, Any]) -> tuple[set[str], set[str], dict[str, Any]]:
    """(event types, tags, CIM field values) an event must get."""
    stream = event["logType"]
    if stream == "activities":  # the sample: Alice suspends Bob (a user)
        first = event["entityDetails"][0]
        return (
            {"strongdm_audit", "strongdm_change_activity", "strongdm_account_change"},
            {"change", "account"},
            {
                "action": "modified",
                "command": event["activity"],
                "object": first["name"],
                "object_id": first["id"],
                "object_category": "user",
                "user": first["email"],
                "src_user": event["actorEmail"],
                "src": event["ipAddress"],
                "status": "success",
                "change_type": "AAA",
                "dest": "strongdm",
                "dvc": "strongdm",
                "vendor_product": "StrongDM",
                "user_agent": event["userAgent"],
            },
        )
    if stream == "queries" and event["queryCategory"] == "queries":
        return (
            {"strongdm_audit", "strongdm_database_query"},
            {"database", "query"},
            {
                "query": event["queryBody"],
                "query_id": event["queryId"],
                "query_time": event["timestamp"],
                "records_affected": str(event["recordCount"]),
                "duration": str(event["durationMs"] / 1000),
                "user": event["accountEmail"],
                "src": event["clientIp"],
                "dest": "db.internal.example.com",
                "dest_port": "5432",
                "vendor_product": "StrongDM",
            },
        )
    if stream == "queries":  # an SSH session: no CIM data model
        return (
            {"strongdm_audit", "strongdm_session"},
            set(),
            {"user": event["accountEmail"], "dest": "2001:db8::1", "dest_port": "22", "action": None},
        )
    if stream == "replays":
        return {"strongdm_audit", "strongdm_replay"}, set(), {"action": None, "object": None}
    if stream == "managed_secret_logs":
        return (
            {"strongdm_audit", "strongdm_secret_access"},
            {"change"},
            {
                "action": "read",
                "vendor_action": "retrieve",
                "command": "retrieve",
                "object": event["managedSecretId"],
                "object_id": event["managedSecretId"],
                "object_category": "managed_secret",
                "user": event["accountId"],
                "status": "success",
            },
        )
    assert stream.endswith("_history"), stream
    key = STREAMS[stream].record_class.DESCRIPTOR.fields_by_name[STREAMS[stream].entity_field].json_name
    entity = event[key]
    object_id = event["id"].split(":", 1)[1]
    name = next((entity[k] for k in ("email", "name", "username") if entity.get(k)), object_id)
    account = stream == "accounts_history"
    return (
        {"strongdm_audit", "strongdm_history_change"} | ({"strongdm_account_change"} if account else set()),
        {"change"} | ({"account"} if account else set()),
        {
            "action": "deleted" if stream in DELETED else "modified",
            "object": name,
            "object_id": object_id,
            "object_category": "user" if account else _snake(key),
            "user": entity["email"] if account else None,
            "status": "success",
            "change_type": "AAA",
            "dest": "strongdm",
        },
    )


def cim_problems(result: Result, stream: str) -> list[str]:
    """What the CIM data models a result is tagged for would miss or refuse."""
    problems = []
    tags = result.tags
    if not tags <= CIM_TAGS:
        problems.append(f"tags outside the CIM ones: {tags - CIM_TAGS}")
    if "authentication" in tags:
        problems += [f"Authentication needs {f}" for f in AUTHENTICATION_REQUIRED if not result.value(f)]
        if result.value("action") not in ("success", "failure"):
            problems.append(f"Authentication action {result.value('action')!r}")
    if "change" in tags:
        kind = stream if stream in CHANGE_UNAVAILABLE else "history"
        wanted = [f for f in CHANGE_REQUIRED if f not in CHANGE_UNAVAILABLE[kind]]
        problems += [f"Change needs {f}" for f in wanted if not result.value(f)]
        if result.value("action") not in CHANGE_ACTIONS:
            problems.append(f"Change action {result.value('action')!r}")
        if result.value("status") not in ("success", "failure"):
            problems.append(f"Change status {result.value('status')!r}")
    if "account" in tags and result.value("object_category") != "user":
        problems.append("Account_Management wants object_category=user")
    if "query" in tags and "database" not in tags:
        problems.append("Database_Query is a dataset of Databases (tag database)")
    if "database" in tags:
        problems += [f"Databases: {f} missing" for f in DATABASE_FIELDS if not result.value(f)]
    return problems


# --- splunk-appinspect -----------------------------------------------------------------------


@pytest.mark.parametrize("options", [(), ("--included-tags", "cloud")], ids=["default", "cloud"])
def test_appinspect_passes(tmp_path: Path, options: tuple[str, ...]) -> None:
    summary, findings = run_appinspect(APP, tmp_path, *options)
    print(f"splunk-appinspect {' '.join(options) or '(default checks)'}: {summary}")
    assert summary["success"] > 50, summary  # it really ran its checks
    assert not any(summary[kind] for kind in APPINSPECT_BAD), findings
    assert not summary["warning"] and not summary["skipped"], findings


def test_appinspect_fails_a_broken_copy(tmp_path: Path) -> None:
    """The verdict above can fail: a duplicate stanza is a failure."""
    broken = tmp_path / "src" / APP.name
    shutil.copytree(APP, broken)
    with (broken / "default" / "props.conf").open("a") as props:
        props.write(f"\n[{SOURCETYPE}]\nKV_MODE = json\n")
    summary, findings = run_appinspect(broken, tmp_path)
    assert summary["failure"] >= 1 and any("check_config_file_parsing" in f for f in findings), findings


# --- the mapping -----------------------------------------------------------------------------


@pytest.mark.parametrize("how", EXTRACTIONS, ids=str)
def test_every_sample_event_lands_in_its_data_model(addon: AddOn, how: Extraction) -> None:
    seen = set()
    for event in sample_events():
        result = evaluate(addon, event, how)
        eventtypes, tags, fields = expected(event)
        where = f"{event['logType']} {event['id']}"
        assert result.eventtypes == eventtypes, where
        assert result.tags == tags, where
        assert {name: result.value(name) for name in fields} == fields, where
        assert cim_problems(result, event["logType"]) == [], where
        seen.add(event["logType"])
    assert seen == set(STREAMS)


@pytest.mark.parametrize("how", EXTRACTIONS, ids=str)
def test_every_activity_verb_is_a_sign_in_a_sign_out_or_a_change(addon: AddOn, how: Extraction) -> None:
    activity = all_sample_events()["activities"]
    verbs = {v for k, v in vars(constants.ActivityVerb).items() if k.isupper() and isinstance(v, str)}
    assert set(SIGN_INS) | SIGN_OUTS | AUDIT_CHANGES <= verbs
    kinds = {"strongdm_authentication", "strongdm_logout", "strongdm_change_activity"}
    for verb in sorted(verbs):
        result = evaluate(addon, {**activity, "activity": verb}, how)
        (kind,) = result.eventtypes & kinds
        assert cim_problems(result, "activities") == [], verb
        if verb in SIGN_INS:
            assert kind == "strongdm_authentication", verb
            assert result.value("action") == SIGN_INS[verb] == outcome(verb), verb  # as CEF says
            assert result.value("user") == activity["actorEmail"], verb
            assert result.value("src") == activity["ipAddress"], verb
            assert result.value("signature") == verb and result.value("app") == "strongdm"
            assert result.value("dest") in ("strongdm-admin-ui", "strongdm-client", "strongdm"), verb
            assert result.tags == {"authentication"}, verb
        elif verb in SIGN_OUTS:
            assert kind == "strongdm_logout" and not result.tags and result.value("action") is None, verb
        else:
            assert kind == "strongdm_change_activity", verb
            assert result.value("command") == verb and "change" in result.tags, verb
            assert ("audit" in result.tags) == (verb in AUDIT_CHANGES), verb
            lockout = verb.startswith("user account locked due to")
            assert (result.value("result") == "lockout") == lockout, verb
    failed = evaluate(addon, {**activity, "activity": "failed login attempt from the Admin UI"}, how)
    assert failed.value("dest") == "strongdm-admin-ui" and failed.value("reason") == failed.value("signature")
    sso = evaluate(addon, {**activity, "activity": "user logged into the local client using SSO"}, how)
    assert sso.value("dest") == "strongdm-client" and sso.value("authentication_method") == "SSO"


def test_change_actions_follow_the_verb(addon: AddOn) -> None:
    activity = all_sample_events()["activities"]
    how = EXTRACTIONS[0]
    for verb, action in {
        "role created": "created",
        "user invited": "created",
        "user deleted": "deleted",
        "user added to role": "modified",  # a membership: the user is modified, not created
        "user deleted from role": "modified",
        "user suspended": "modified",
        "org integration API key revealed": "read",
    }.items():
        assert evaluate(addon, {**activity, "activity": verb}, how).value("action") == action, verb
    rejected = evaluate(addon, {**activity, "activity": "user lock rejected for a resource"}, how)
    assert rejected.value("status") == "failure"
    secret = all_sample_events()["managed_secret_logs"]
    actions = {"retrieve": "read", "create": "created", "rotate": "modified", "delete": "deleted"}
    for vendor, action in actions.items():
        result = evaluate(addon, {**secret, "action": vendor}, how)
        assert (result.value("action"), result.value("vendor_action")) == (action, vendor)


def test_an_activity_on_a_resource_is_no_account_change(addon: AddOn) -> None:
    activity = all_sample_events()["activities"]
    resource = [{"id": "rs-1", "type": "datasource", "name": "prod-db", "email": "", "externalId": ""}]
    event = {**activity, "activity": "datasource updated", "entityDetails": resource, "entities": ["rs-1"]}
    for how in EXTRACTIONS:
        result = evaluate(addon, event, how)
        assert result.tags == {"change"}, how
        assert (result.value("object_category"), result.value("object")) == ("resource", "prod-db")
        assert result.value("user") == activity["actorEmail"] and result.value("src_user") is None


def test_the_model_is_strict_about_what_it_understands() -> None:
    """An eval form the model does not know fails loudly instead of evaluating wrongly."""
    with pytest.raises(ValueError, match="not modelled"):
        compile_eval('mvfilter(match(x, "y"))')
    assert compile_eval('case(a=="1", "one", true(), "other")')({"a": ["1"]}) == "one"
    assert compile_eval("durationMs / 1000")({"durationMs": ["null"]}) is None


def test_eventtypes_and_tags_are_consistent() -> None:
    eventtypes = read_conf(APP / "default" / "eventtypes.conf")
    tags = read_conf(APP / "default" / "tags.conf")
    assert all(name.startswith("strongdm_") for name in eventtypes)
    assert all(f'sourcetype="{SOURCETYPE}"' in stanza["search"] for stanza in eventtypes.values())
    assert {stanza.removeprefix("eventtype=") for stanza in tags} <= set(eventtypes)
    assert {tag for stanza in tags.values() for tag in stanza} <= CIM_TAGS


def test_the_docs_name_the_sourcetype_the_add_on_reads() -> None:
    props = read_conf(APP / "default" / "props.conf")
    assert list(props) == [SOURCETYPE]
    app = read_conf(APP / "default" / "app.conf")
    manifest = json.loads((APP / "app.manifest").read_text())
    assert app["package"]["id"] == app["id"]["name"] == manifest["info"]["id"]["name"] == APP.name
    assert app["launcher"]["version"] == app["id"]["version"] == manifest["info"]["id"]["version"]
    for doc in (ROOT / "docs" / "sinks.md", APP / "README.md", APP.parent / "README.md"):
        assert f'sourcetype = "{SOURCETYPE}"' in doc.read_text(), doc
