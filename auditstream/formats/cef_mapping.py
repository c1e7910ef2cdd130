"""Which event field goes to which CEF header field and extension key, per stream kind.

Each mapper reads an event dict (after redaction: a dropped field is simply missing, so it
can never reappear in CEF) and returns a ``Mapped``: the Device Event Class ID, the Name, the
string extension pairs, the numeric ones, and its ``Layout`` (the labels of the custom fields
it uses, ``cs1`` -> ``actorName``). ``cef.CefEncoder`` adds the severity, applies lengths and
escaping, drops empty values, and writes a label right before its field only when the field
is written, so no label ever dangles. docs/cef.md is the human-readable form of this module.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from typing import Any

import orjson

from auditstream.formats.cef_escape import DEFAULT_LIMIT, EXTENSION_LIMITS, escape_extension
from auditstream.formats.protovalues import epoch_ms

Pairs = list[tuple[str, Any]]


class Layout:
    """How each extension key of one mapper is written: its length limit and its rendered
    ``[<key>Label=<label> ]<key>=`` prefix, computed once instead of once per event."""

    __slots__ = ("fields",)

    def __init__(self, labels: dict[str, str]) -> None:
        self.fields: dict[str, tuple[int, str]] = {}
        for key, limit in EXTENSION_LIMITS.items():
            label = labels.get(key)
            prefix = f"{key}=" if label is None else f"{key}Label={escape_extension(label)} {key}="
            self.fields[key] = (limit or DEFAULT_LIMIT, prefix)

    def field(self, key: str) -> tuple[int, str]:
        """(limit, prefix) of a key; a key outside the dictionary table gets the default."""
        return self.fields.get(key) or (DEFAULT_LIMIT, f"{key}=")


Mapped = tuple[str, str, Pairs, Pairs, Layout]  # class id, name, strings, numbers, layout
Mapper = Callable[[dict[str, Any]], Mapped]

SOURCE_IPV6_LABEL = "sourceIPv6Address"
FAILURE_VERBS = re.compile(
    r"failed|denied|rejected|locked due to|attempt(ed)? to (login|enroll)", re.IGNORECASE
)

# Verbs, addresses and targets repeat across events: classify each distinct value once.
_ip_cache: dict[str, str | None] = {}
_outcomes: dict[str, str] = {}
_targets: dict[str, tuple[str, int | None]] = {}
_CACHE_LIMIT = 4096


def source_address(value: Any) -> Pairs:
    """``src`` for an IPv4 address, ``c6a2`` for IPv6, nothing for anything else.

    CEF's ``src`` holds IPv4 only; ArcSight carries IPv6 sources in the custom IPv6 field
    ``c6a2``. A value that is not an IP address (or is a hash after redaction) is not
    guessed into a network field: JSON keeps it.
    """
    if not isinstance(value, str) or not value:
        return []
    key = _ip_cache.get(value, "")
    if key == "":
        key = _classify_ip(value)
        if len(_ip_cache) >= _CACHE_LIMIT:
            _ip_cache.clear()
        _ip_cache[value] = key
    if key is None:
        return []
    return [(key, value)]


def _classify_ip(value: str) -> str | None:
    if not value.isascii() or "\x00" in value or len(value) > 45:  # inet_pton would raise ValueError
        return None
    for family, key in ((socket.AF_INET, "src"), (socket.AF_INET6, "c6a2")):
        try:
            socket.inet_pton(family, value)
        except OSError:
            continue
        return key
    return None


def outcome(verb: str) -> str:
    """``failure`` for verbs that record a refused or failed attempt, else ``success``."""
    known = _outcomes.get(verb)
    if known is None:
        known = "failure" if FAILURE_VERBS.search(verb) else "success"
        if len(_outcomes) >= _CACHE_LIMIT:
            _outcomes.clear()
        _outcomes[verb] = known
    return known


def split_target(target: Any) -> tuple[str, int | None]:
    """``host:port`` (or ``[v6]:port``) -> (host, port); anything else -> (target, None)."""
    if not isinstance(target, str) or not target:
        return "", None
    known = _targets.get(target)
    if known is None:
        known = _split_target(target)
        if len(_targets) >= _CACHE_LIMIT:
            _targets.clear()
        _targets[target] = known
    return known


def _split_target(target: str) -> tuple[str, int | None]:
    host, sep, port = target.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or not host or int(port) > 65535:
        return target, None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:  # a bare IPv6 address, not host:port
        return target, None
    return host, int(port)


def compact_json(value: Any) -> str | None:
    """A nested value for a ``cs`` field: compact JSON, None when there is nothing."""
    if value is None or value == [] or value == {}:
        return None
    return orjson.dumps(value).decode("utf-8")


def _text(value: Any) -> str | None:
    """A string field of the event, None when missing or not a string."""
    return value if type(value) is str else None


ACTIVITY_LAYOUT = Layout(
    {"c6a2": SOURCE_IPV6_LABEL, "cs1": "actorName", "cs2": "actorExternalID", "cs3": "entities"}
)


def map_activity(event: dict[str, Any]) -> Mapped:
    """Activities: actor -> suser/suid/src, first user entity -> duser/duid, first
    datasource or node entity -> dhost, description -> msg."""
    get = event.get
    verb = _text(get("activity")) or ""
    details = get("entityDetails")
    target_user: dict[str, Any] = {}
    target_host = None
    if type(details) is list:
        for entity in details:
            if type(entity) is not dict:
                continue
            kind = entity.get("type")
            if kind == "user" and not target_user:
                target_user = entity
            elif kind in ("datasource", "node") and target_host is None:
                target_host = entity.get("name")
    actor_name = get("actorName")
    strings: Pairs = [
        ("cat", get("logType")),
        ("externalId", get("id")),
        ("act", verb),
        ("outcome", outcome(verb)),
        ("suser", get("actorEmail") or actor_name),
        ("suid", get("actorAccountID")),
        *source_address(get("ipAddress")),
        ("duser", target_user.get("email") or target_user.get("name")),
        ("duid", target_user.get("id")),
        ("dhost", target_host),
        ("msg", get("description")),
        ("requestClientApplication", get("userAgent")),
        ("cs1", actor_name),
        ("cs2", get("actorExternalID")),
        ("cs3", compact_json(details if details is not None else get("entities"))),
    ]
    name = verb or "activity"
    return name, name, strings, [("rt", epoch_ms(get("timestamp")))], ACTIVITY_LAYOUT


QUERY_LAYOUT = Layout(
    {
        "c6a2": SOURCE_IPV6_LABEL,
        "cn1": "durationMs",
        "cn2": "recordCount",
        "cs1": "resourceName",
        "cs2": "resourceType",
        "cs3": "resourceId",
        "cs4": "queryId",
        "cs5": "queryState",
        "cs6": "queryHash",
    }
)


def map_query(event: dict[str, Any]) -> Mapped:
    """Queries: account -> suser/suid/src, target -> dhost/dpt, remote user -> duser,
    body -> msg, duration and record count -> cn1/cn2."""
    get = event.get
    category = _text(get("queryCategory")) or ""
    state = _text(get("queryState")) or ""
    host, port = split_target(get("target"))
    capture = get("capture")
    capture = capture if type(capture) is dict else {}
    resource_name, resource_type = get("resourceName"), get("resourceType")
    start = epoch_ms(get("timestamp"))
    strings: Pairs = [
        ("cat", get("logType")),
        ("externalId", get("id")),
        ("act", category),
        ("suser", get("accountEmail") or _full_name(get("accountFirstName"), get("accountLastName"))),
        ("suid", get("accountId")),
        *source_address(get("clientIp") or get("sourceIp")),
        ("duser", get("remoteIdentityUsername") or get("identityAliasUsername")),
        ("dhost", host or resource_name),
        ("msg", get("queryBody")),
        ("request", capture.get("requestUri")),
        ("requestMethod", capture.get("requestMethod")),
        ("fname", capture.get("fileName")),
        ("cs1", resource_name),
        ("cs2", resource_type),
        ("cs3", get("resourceId")),
        ("cs4", get("queryId")),
        ("cs5", state),
        ("cs6", get("queryHash")),
    ]
    numbers: Pairs = [
        ("rt", start),
        ("start", start),
        ("end", epoch_ms(get("completedAt"))),
        ("dpt", port),
        ("cn1", get("durationMs")),
        ("cn2", get("recordCount")),
    ]
    what = _text(resource_type) or category or "resource"
    class_id = f"query:{category}" if category else "query"
    return class_id, f"{what} query {state}".strip(), strings, numbers, QUERY_LAYOUT


def _full_name(first: Any, last: Any) -> str:
    return " ".join(part for part in (first, last) if type(part) is str and part)


_HOST_KEYS = ("resource", "node")


def history_mapper(log_type: str, entity_key: str, polymorphic: bool) -> Mapper:
    """History streams: the changed entity -> cs2..cs5 (type, id, name, full JSON), its
    account -> duser/duid, its host -> dhost; ``deletedAt`` -> deviceCustomDate1.

    ``entityType`` is the oneof member of a polymorphic entity (``postgres``, ``user``) and
    the entity key otherwise (an AccessRequestEvent's own ``type`` field is not its type).
    """
    label = re.sub(r"(?<!^)(?=[A-Z])", " ", entity_key).lower()

    layout = Layout(
        {
            "deviceCustomDate1": "deletedAt",
            "cs1": "activityId",
            "cs2": "entityType",
            "cs3": "entityId",
            "cs4": "entityName",
            "cs5": entity_key,
            "cs6": "id",
        }
    )

    def map_history(event: dict[str, Any]) -> Mapped:
        get = event.get
        entity = get(entity_key)
        entity = entity if type(entity) is dict else {}
        deleted = epoch_ms(get("deletedAt"))
        change = "changed" if deleted is None else "deleted"
        target_id = entity.get("accountId") or (entity.get("id") if entity_key == "account" else None)
        host = entity.get("hostname") or (entity.get("name") if entity_key in _HOST_KEYS else None)
        record_id = get("id")
        strings: Pairs = [
            ("cat", get("logType")),
            ("externalId", record_id),
            ("act", change),
            ("duser", entity.get("email") or (entity.get("name") if entity_key == "account" else None)),
            ("duid", target_id),
            ("dhost", host),
            ("cs1", get("activityId")),
            ("cs2", (entity.get("type") if polymorphic else None) or entity_key),
            ("cs3", entity.get("id")),
            ("cs4", entity.get("name")),
            ("cs5", compact_json(entity)),
            ("cs6", record_id),
        ]
        numbers: Pairs = [("rt", epoch_ms(get("timestamp"))), ("deviceCustomDate1", deleted)]
        return log_type, f"{label} {change}", strings, numbers, layout

    return map_history


GENERIC_LAYOUT = Layout({"cs6": "id"})


def map_generic(event: dict[str, Any]) -> Mapped:
    """A stream this build has no mapping for: time, category and id, nothing guessed."""
    log_type = _text(event.get("logType")) or "event"
    record_id = event.get("id")
    strings: Pairs = [("cat", log_type), ("externalId", record_id), ("cs6", record_id)]
    return log_type, log_type, strings, [("rt", epoch_ms(event.get("timestamp")))], GENERIC_LAYOUT
