"""Elastic Common Schema encoding (``format = "ecs"``): one ECS 9.x document per event dict.

Like CEF and OCSF, this encodes the normalized event (after masking and redaction). The
document has ``@timestamp`` (the record's time), ``ecs.version``, ``event.*`` (``kind``
event; ``category`` and ``type`` from the same decision as the OCSF class, so the two
formats agree, and only with the types ECS expects for the category; ``action``,
``outcome``, ``id`` = the record key, the value OCSF's ``metadata.original_event_uid``
carries; ``dataset`` ``strongdm.<stream>``; ``severity`` from the ``[cef]`` rules;
``duration`` in nanoseconds, ``start``, ``end``), ``user.*`` (who acted), ``user.target.*``
(whom it was done to), ``group.*`` (the role of a role-membership change), ``source.*``,
``destination.*``, ``url.*`` and ``http.request.method`` where a request has them,
``user_agent.original``, ``related.{user,ip,hosts}`` and ``message``. Every field of the
event that no ECS field carries goes under ``strongdm``, by its JSON name: nothing is lost,
and ECS field names are never invented. docs/formats.md ("ECS") is the table.

Fields typed ``ip`` get addresses only (Elasticsearch refuses a document with anything else
there: a redacted address is a hash); anything else goes to the ``address`` keyword.
``tests/formats/test_ecs.py`` checks every field against ``ecs_flat.yml`` of the release.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson

from auditstream.formats import compiled
from auditstream.formats.cache import remember
from auditstream.formats.cef import CefSettings
from auditstream.formats.cef_mapping import outcome
from auditstream.formats.events import Event, history_entity_key
from auditstream.formats.ocsf import leftovers
from auditstream.formats.ocsf_rules import (
    ENTITY_MANAGEMENT,
    FAILURE,
    GROUP_MANAGEMENT,
    SECRET_ACTIONS,
    SUCCESS,
    EcsKind,
    classify_query,
    decide,
    ecs_kind,
)
from auditstream.formats.schema_values import email_of, full_name, ip_of, target_of, text
from auditstream.formats.severity_policy import SeverityPolicy
from auditstream.sdm.registry import STREAMS, StreamKind, StreamSpec

__all__ = ["ECS_VERSION", "EcsEncoder"]

ECS_VERSION = "9.4.0"  # the release whose ecs_flat.yml the tests check every field against
ECS = {"version": ECS_VERSION}
VENDOR = "strongdm"
OUTCOMES = {SUCCESS: "success", FAILURE: "failure"}
_dumps = orjson.dumps

Builder = Callable[[Event], dict[str, Any]]


def event_fields(
    categories: Sequence[str],
    types: Sequence[str],
    action: str,
    outcome: str,
    dataset: str,
    severity: int,
    record_id: object,
) -> dict[str, Any]:
    """``event.*`` of a mapped record, the same keys in the same order for every stream."""
    meta: dict[str, Any] = {
        "kind": "event",
        "category": categories,
        "type": types,
        "action": action,
        "outcome": outcome,
        "dataset": dataset,
        "module": VENDOR,
        "severity": severity,
    }
    if type(record_id) is str:
        meta["id"] = record_id
    return meta


class EcsEncoder:
    """Encodes event dicts as ECS documents (``to_ecs``: the dict; ``encode_bytes``: JSON)."""

    def __init__(self, cef: CefSettings | None = None) -> None:
        self._severity = SeverityPolicy(cef)
        self._builders: dict[str, Builder] = {spec.name: self._builder(spec) for spec in STREAMS.values()}

    def encode_bytes(self, event: Event) -> bytes:
        """One ECS document as compact JSON (the hot path)."""
        return _dumps(self.to_ecs(event))

    def to_ecs(self, event: Event) -> dict[str, Any]:
        """The ECS document of one event dict. Shares constant parts between documents:
        read it, serialize it, do not change it."""
        log_type = event.get("logType")
        build = self._builders.get(log_type) if type(log_type) is str else None
        return (build or self._generic)(event)

    def _builder(self, spec: StreamSpec) -> Builder:
        if spec.kind is StreamKind.ACTIVITY:
            return self._activity_builder(spec.name)
        if spec.kind is StreamKind.QUERY or spec.kind is StreamKind.REPLAY:
            return self._query_builder(spec.name, spec.kind)
        if spec.kind is StreamKind.SECRET_LOG:
            return self._secret_log_builder(spec.name)
        entity = spec.record_class.DESCRIPTOR.fields_by_name[spec.entity_field].message_type
        return self._history_builder(spec.name, history_entity_key(spec), compiled.is_polymorphic(entity))

    def _activity_builder(self, log_type: str) -> Builder:
        dataset = f"{VENDOR}.{log_type}"
        heads: dict[str, tuple[EcsKind, str, int, bool]] = {}

        def head_of(verb: str) -> tuple[EcsKind, str, int, bool]:
            decision = decide(verb)
            status = decision.status_id or (FAILURE if outcome(verb) == "failure" else SUCCESS)
            kind = ecs_kind(decision.cls, decision.activity_id)
            head = (
                kind,
                OUTCOMES[status],
                self._severity.verb(verb, log_type),
                decision.cls is GROUP_MANAGEMENT,
            )
            return remember(heads, verb, head)

        def build(event: Event) -> dict[str, Any]:
            get = event.get
            verb = get("activity")
            verb = verb if type(verb) is str else ""
            (categories, types), result, severity, membership = heads.get(verb) or head_of(verb)
            stamp = get("timestamp")
            meta = event_fields(categories, types, verb, result, dataset, severity, get("id"))
            doc: dict[str, Any] = {"@timestamp": stamp} if stamp else {}
            doc["ecs"] = ECS
            doc["event"] = meta
            related = Related()
            actor = user_fields(get("actorAccountID"), get("actorEmail"), get("actorName") or None, related)
            details = get("entityDetails")
            details = details if type(details) is list else ()
            target = _first(details, ("user",))
            if target is not None:
                target_user = user_fields(target.get("id"), target.get("email"), target.get("name"), related)
                if target_user:
                    actor = actor or {}
                    actor["target"] = target_user
            if actor:
                doc["user"] = actor
            if membership:
                role = _first(details, ("role", "composite_role"))
                if role is not None:
                    group = {
                        k: v for k, v in (("id", text(role.get("id"))), ("name", text(role.get("name")))) if v
                    }
                    if group:
                        doc["group"] = group
            source = source_fields(get("ipAddress"), related)
            if source is not None:
                doc["source"] = source
            agent = get("userAgent")
            if type(agent) is str and agent:
                doc["user_agent"] = {"original": agent}
            message = get("description")
            if type(message) is str and message:
                doc["message"] = message
            related.put(doc)
            doc[VENDOR] = leftovers(event, ACTIVITY_MAPPED)
            return doc

        return build

    def _query_builder(self, log_type: str, stream_kind: StreamKind) -> Builder:
        dataset = f"{VENDOR}.{log_type}"
        replay = stream_kind is StreamKind.REPLAY
        severity = self._severity.stream(log_type, stream_kind)
        mapped = REPLAY_MAPPED if replay else QUERY_MAPPED

        def build(event: Event) -> dict[str, Any]:
            get = event.get
            category = get("queryCategory")
            category = category if type(category) is str else ""
            body = get("queryBody")
            body = body if type(body) is str else ""
            capture = get("capture")
            capture = capture if type(capture) is dict else _EMPTY
            end = get("completedAt")
            kind = classify_query(category, body, capture, completed=bool(end), replay=replay)
            categories, types = ecs_kind(kind.cls, kind.activity_id)
            stamp = get("timestamp")
            meta = event_fields(
                categories,
                types,
                "replay" if replay else query_action(get("resourceType"), category, get("queryState")),
                "success",
                dataset,
                severity,
                get("id"),
            )
            if not replay:
                if type(stamp) is str:
                    meta["start"] = stamp
                if type(end) is str:
                    meta["end"] = end
                duration = get("durationMs")
                if type(duration) is int:
                    meta["duration"] = duration * 1_000_000
            doc: dict[str, Any] = {"@timestamp": stamp} if stamp else {}
            doc["ecs"] = ECS
            doc["event"] = meta
            related = Related()
            user = user_fields(
                get("accountId"),
                get("accountEmail"),
                full_name(get("accountFirstName"), get("accountLastName")),
                related,
            )
            remote = text(get("remoteIdentityUsername")) or text(get("identityAliasUsername"))
            if remote is not None:
                user = user or {}
                user["target"] = {"name": remote}
                related.user(remote)
            if user:
                doc["user"] = user
            source = source_fields(get("clientIp") or get("sourceIp"), related)
            if source is not None:
                doc["source"] = source
            destination = destination_fields(get("target"), related)
            if destination is not None:
                doc["destination"] = destination
            if kind.uri is not None:
                doc["url"] = url_fields(kind.uri, get("target"))
            if kind.method is not None:
                doc["http"] = {"request": {"method": kind.method}}
            message = get("text") if replay else body
            if type(message) is str and message:
                doc["message"] = message
            related.put(doc)
            doc[VENDOR] = leftovers(event, mapped)
            return doc

        return build

    def _history_builder(self, log_type: str, entity_key: str, polymorphic: bool) -> Builder:
        dataset = f"{VENDOR}.{log_type}"
        changed = ecs_kind(ENTITY_MANAGEMENT, 3)
        deleted_kind = ecs_kind(ENTITY_MANAGEMENT, 4)
        label = "".join(f" {c.lower()}" if c.isupper() else c for c in entity_key).strip()
        severities = {
            False: self._severity.stream(log_type, StreamKind.HISTORY),
            True: self._severity.stream(log_type, StreamKind.HISTORY, deleted=True),
        }

        def build(event: Event) -> dict[str, Any]:
            get = event.get
            deleted = get("deletedAt") is not None
            categories, types = deleted_kind if deleted else changed
            action = f"{label} {'deleted' if deleted else 'changed'}"
            meta = event_fields(categories, types, action, "success", dataset, severities[deleted], get("id"))
            stamp = get("timestamp")
            doc: dict[str, Any] = {"@timestamp": stamp} if stamp else {}
            doc["ecs"] = ECS
            doc["event"] = meta
            doc["message"] = action
            doc[VENDOR] = leftovers(event, HISTORY_MAPPED)
            return doc

        return build

    def _secret_log_builder(self, log_type: str) -> Builder:
        dataset = f"{VENDOR}.{log_type}"
        severity = self._severity.stream(log_type, StreamKind.SECRET_LOG)

        def build(event: Event) -> dict[str, Any]:
            get = event.get
            action = get("action")
            action = action if type(action) is str else ""
            categories, types = ecs_kind(ENTITY_MANAGEMENT, SECRET_ACTIONS.get(action.lower(), 99))
            meta = event_fields(
                categories, types, f"managed secret {action}".strip(), "success", dataset, severity, get("id")
            )
            stamp = get("timestamp")
            doc: dict[str, Any] = {"@timestamp": stamp} if stamp else {}
            doc["ecs"] = ECS
            doc["event"] = meta
            account = text(get("accountId"))
            if account is not None:
                doc["user"] = {"id": account}
            doc["message"] = meta["action"]
            doc[VENDOR] = leftovers(event, SECRET_LOG_MAPPED)
            return doc

        return build

    def _generic(self, event: Event) -> dict[str, Any]:
        """A stream this build has no mapping for: the ECS basics, the record under strongdm."""
        get = event.get
        log_type = get("logType")
        log_type = log_type if type(log_type) is str else "event"
        meta: dict[str, Any] = {
            "kind": "event",
            "dataset": f"{VENDOR}.{log_type}",
            "module": VENDOR,
            "severity": self._severity.stream(log_type, None),
        }
        record_id = get("id")
        if type(record_id) is str:
            meta["id"] = record_id
        stamp = get("timestamp")
        doc: dict[str, Any] = {"@timestamp": stamp} if stamp else {}
        doc["ecs"] = ECS
        doc["event"] = meta
        doc[VENDOR] = leftovers(event, _COMMON)
        return doc


_COMMON = ("id", "timestamp")
ACTIVITY_MAPPED = (
    *_COMMON,
    "activity",
    "actorAccountID",
    "actorEmail",
    "actorName",
    "description",
    "userAgent",
)
_SESSION = ("accountId", "accountEmail", "remoteIdentityUsername", "identityAliasUsername")
QUERY_MAPPED = (*_COMMON, *_SESSION, "completedAt", "durationMs", "queryBody")
REPLAY_MAPPED = (*_COMMON, *_SESSION, "text")
HISTORY_MAPPED = _COMMON
SECRET_LOG_MAPPED = (*_COMMON, "accountId")
_EMPTY: dict[str, Any] = {}


class Related:
    """``related.{user,ip,hosts}``: every user, address and host the document names, once."""

    __slots__ = ("hosts", "ips", "users")

    def __init__(self) -> None:
        self.users: list[str] = []
        self.ips: list[str] = []
        self.hosts: list[str] = []

    def user(self, value: str) -> None:
        if value not in self.users:
            self.users.append(value)

    def ip(self, value: str) -> None:
        if value not in self.ips:
            self.ips.append(value)

    def host(self, value: str) -> None:
        if value not in self.hosts:
            self.hosts.append(value)

    def put(self, doc: dict[str, Any]) -> None:
        related: dict[str, Any] = {}
        if self.users:
            related["user"] = self.users
        if self.ips:
            related["ip"] = self.ips
        if self.hosts:
            related["hosts"] = self.hosts
        if related:
            doc["related"] = related


def _first(details: Any, kinds: tuple[str, ...]) -> dict[str, Any] | None:
    for entity in details:
        if type(entity) is dict and entity.get("type") in kinds:
            return entity
    return None


def user_fields(uid: Any, email: Any, name: Any, related: Related) -> dict[str, Any]:
    """``user.{id,email,name,full_name}``: ``name`` is the login (the email, as StrongDM
    signs in by email), ``full_name`` the person's name."""
    user: dict[str, Any] = {}
    if type(uid) is str and uid:
        user["id"] = uid
    address = email_of(email) or text(email)
    if address is not None:
        user["email"] = address
    person = text(name)
    login = address or person
    if login is not None:
        user["name"] = login
        related.user(login)
    if person is not None:
        user["full_name"] = person
    return user


def source_fields(value: Any, related: Related) -> dict[str, Any] | None:
    """``source.ip`` for an address, ``source.address`` for anything else (a hash...)."""
    address = ip_of(value)
    if address is not None:
        related.ip(address)
        return {"ip": address, "address": address}
    if type(value) is str and value:
        return {"address": value}
    return None


def destination_fields(target: Any, related: Related) -> dict[str, Any] | None:
    """``destination.{address,domain|ip,port}`` from a query's ``target``."""
    parts = target_of(target)
    host = parts.ip or parts.hostname
    if host is None:
        return None
    destination: dict[str, Any] = {"address": host}
    if parts.ip is not None:
        destination["ip"] = parts.ip
        related.ip(parts.ip)
    else:
        destination["domain"] = host
        related.host(host)
    if parts.port is not None:
        destination["port"] = parts.port
    return destination


def url_fields(uri: str, target: Any) -> dict[str, Any]:
    """``url.*`` of a request: its path and query, and the target's scheme, host and port."""
    path, question, query = uri.partition("?")
    url: dict[str, Any] = {"path": path or "/"}
    if question:
        url["query"] = query
    parts = target_of(target)
    if parts.scheme is not None:
        url["scheme"] = parts.scheme
    if parts.hostname is not None:
        url["domain"] = parts.hostname
    if parts.port is not None:
        url["port"] = parts.port
    if parts.scheme is not None and parts.hostname is not None:
        port = f":{parts.port}" if parts.port is not None else ""
        url["original"] = f"{parts.scheme}://{parts.hostname}{port}{uri}"
    else:
        url["original"] = uri
    return url


_actions: dict[tuple[Any, ...], str] = {}


def query_action(resource_type: Any, category: str, state: Any) -> str:
    """``postgres query completed``: the CEF event name, as ``event.action``."""
    key = (resource_type, category, state)
    known = _actions.get(key)
    if known is None:
        kind = resource_type if type(resource_type) is str and resource_type else category or "resource"
        known = remember(_actions, key, f"{kind} query {state if type(state) is str else ''}".strip())
    return known
