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

from auditstream.formats.cef_escape import DEFAULT_LIMIT, EXTENSION_LIMITS, escape_extension, short_id
from auditstream.formats.protovalues import epoch_ms

Pairs = list[tuple[str, Any]]
Values = tuple[Any, ...]


class Layout:
    """How one mapper's extension is written, computed once instead of once per event.

    ``numbers`` are the numeric keys in output order. ``strings`` are the string keys in
    output order, in groups: a tuple of keys is a group whose values repeat across events
    together (the actor's email and id, the verb and its outcome), rendered once per
    distinct combination and cached; a bare key is a value that differs on nearly every
    event (ids, descriptions), rendered each time. ``constants`` are leading string keys
    whose value is fixed for the mapper (``cat``: the stream a mapper is chosen for).

    A mapper returns the number values as a tuple in ``number_keys`` order and the string
    values as a tuple with one item per group: the value of a bare key, the value of a
    one-key group, or a tuple of values for a larger group (``flatten`` gives them back in
    ``string_keys`` order, constants included). For every key the layout also holds its
    length limit and its rendered ``[<key>Label=<label> ]<key>=`` prefix.
    """

    __slots__ = (
        "constants",
        "fields",
        "groups",
        "name",
        "number_keys",
        "number_prefixes",
        "renderer",
        "renderer_source",
        "string_keys",
        "string_limits",
        "string_prefixes",
    )

    def __init__(
        self,
        labels: dict[str, str],
        numbers: tuple[str, ...] = (),
        strings: tuple[str | tuple[str, ...], ...] = (),
        name: str = "plain",
        constants: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.name = name
        self.renderer: Callable[[Values, Values], str] | None = None  # cef_render.renderer_for
        self.renderer_source: str | None = None
        self.fields: dict[str, tuple[int, str]] = {}
        for key, limit in EXTENSION_LIMITS.items():
            label = labels.get(key)
            prefix = f"{key}=" if label is None else f"{key}Label={escape_extension(label)} {key}="
            self.fields[key] = (limit or DEFAULT_LIMIT, prefix)
        self.constants = constants
        self.number_keys = numbers
        self.string_keys = tuple(key for key, _ in constants) + tuple(
            k for group in strings for k in ((group,) if isinstance(group, str) else group)
        )
        self.number_prefixes = tuple(self.field(key)[1] for key in numbers)
        self.string_prefixes = tuple(self.field(key)[1] for key in self.string_keys)
        self.string_limits = tuple(self.field(key)[0] for key in self.string_keys)
        # (start, stop, cache) per group, indices into string_keys; cache None: a bare key.
        self.groups: list[tuple[int, int, dict[Any, str] | None]] = []
        start = len(constants)
        for group in strings:
            stop = start + (1 if isinstance(group, str) else len(group))
            self.groups.append((start, stop, None if isinstance(group, str) else {}))
            start = stop

    def flatten(self, strings: Values) -> Values:
        """A mapper's grouped string values as one tuple in ``string_keys`` order."""
        flat: list[Any] = [value for _, value in self.constants]
        for (start, stop, _), value in zip(self.groups, strings, strict=True):
            if stop - start > 1:
                flat.extend(value)
            else:
                flat.append(value)
        return tuple(flat)

    def field(self, key: str) -> tuple[int, str]:
        """(limit, prefix) of a key; a key outside the dictionary table gets the default."""
        return self.fields.get(key) or (DEFAULT_LIMIT, f"{key}=")


# class id, name, number values, string values (in the layout's key order), layout
Mapped = tuple[str, str, Values, Values, Layout]
Mapper = Callable[[dict[str, Any]], Mapped]

SOURCE_IPV6_LABEL = "sourceIPv6Address"
FAILURE_VERBS = re.compile(
    r"failed|denied|rejected|locked due to|attempt(ed)? to (login|enroll)", re.IGNORECASE
)

# Verbs, addresses and targets repeat across events: classify each distinct value once.
_ip_cache: dict[str, tuple[str | None, str | None]] = {}
_outcomes: dict[str, str] = {}
_targets: dict[str, tuple[str, int | None]] = {}
_CACHE_LIMIT = 4096


def source_address(value: Any) -> tuple[str | None, str | None]:
    """(``src``, ``c6a2``): IPv4 addresses go to ``src``, IPv6 to ``c6a2``, anything else nowhere.

    CEF's ``src`` holds IPv4 only; ArcSight carries IPv6 sources in the custom IPv6 field
    ``c6a2``. A value that is not an IP address (or is a hash after redaction) is not
    guessed into a network field: JSON keeps it.
    """
    if not isinstance(value, str) or not value:
        return _NO_ADDRESS
    slots = _ip_cache.get(value)
    if slots is None:
        key = _classify_ip(value)
        slots = (value, None) if key == "src" else (None, value) if key == "c6a2" else _NO_ADDRESS
        if len(_ip_cache) >= _CACHE_LIMIT:
            _ip_cache.clear()
        _ip_cache[value] = slots
    return slots


_NO_ADDRESS: tuple[str | None, str | None] = (None, None)


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


def external_id(value: Any) -> Any:
    """``externalId`` cut to its limit here, as the renderer would (``short_id``).

    History ids (``<activityId>:<entity>``) are always over 40 characters; shortening ids in
    the mapper keeps them on the renderer's fast path.
    """
    if type(value) is str and len(value) > EXTERNAL_ID_MAX:
        return short_id(value, EXTERNAL_ID_MAX)
    return value


EXTERNAL_ID_MAX = EXTENSION_LIMITS["externalId"]


def compact_json(value: Any) -> str | None:
    """A nested value for a ``cs`` field: compact JSON, None when there is nothing."""
    if not value and (value is None or isinstance(value, list | dict)):
        return None
    return orjson.dumps(value).decode("utf-8")


def _text(value: Any) -> str | None:
    """A string field of the event, None when missing or not a string."""
    return value if isinstance(value, str) else None


ACTIVITY_LAYOUT = Layout(
    {"c6a2": SOURCE_IPV6_LABEL, "cs1": "actorName", "cs2": "actorExternalID", "cs3": "entities"},
    numbers=("rt",),
    constants=(("cat", "activities"),),
    strings=(
        "externalId",
        ("act", "outcome", "suser", "suid"),
        ("src", "c6a2"),
        ("duser", "duid", "dhost"),
        "msg",
        ("requestClientApplication", "cs1", "cs2"),
        ("cs3",),
    ),
    name="activities",
)
ACTIVITY_VERB_GROUP = 1  # strings[1][0] is the verb (act)


def map_activity(event: dict[str, Any]) -> Mapped:
    """Activities: actor -> suser/suid/src, first user entity -> duser/duid, first
    datasource or node entity -> dhost, description -> msg."""
    get = event.get
    verb = get("activity")
    if not isinstance(verb, str):
        verb = ""
    details = get("entityDetails")
    if type(details) is list and details and _DICT_ONLY.issuperset(map(type, details)):
        # The usual case: the entities' JSON (cs3) doubles as the key of their targets.
        text = _dumps(details).decode("utf-8")
        targets = _targets_by_json.get(text)
        if targets is None:
            targets = _remember(_targets_by_json, text, entity_targets(details))
        entities_json: str | None = text
    else:
        targets = entity_targets(details)
        entities_json = compact_json(details if details is not None else get("entities"))
    actor_name = get("actorName")
    strings = (
        get("id"),
        (verb, _outcomes.get(verb) or outcome(verb), get("actorEmail") or actor_name, get("actorAccountID")),
        source_address(get("ipAddress")),
        targets,
        get("description"),
        (get("userAgent"), actor_name, get("actorExternalID")),
        entities_json,
    )
    name = verb or "activity"
    return name, name, (epoch_ms(get("timestamp")),), strings, ACTIVITY_LAYOUT


def entity_targets(details: Any) -> tuple[Any, Any, Any]:
    """(duser, duid, dhost) of an activity: the first user entity's email (or name) and id,
    the first datasource or node entity's name."""
    target_user: dict[str, Any] = _NO_ENTITY
    target_host = None
    if type(details) is list:
        for entity in details:
            if type(entity) is not dict:
                continue
            kind = entity.get("type")
            if kind == "user" and not target_user:
                target_user = entity
            elif kind in _HOST_ENTITY_TYPES and target_host is None:
                target_host = entity.get("name")
    return target_user.get("email") or target_user.get("name"), target_user.get("id"), target_host


def _remember(cache: dict[str, Any], key: str, value: Any) -> Any:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = value
    return value


_dumps = orjson.dumps
_DICT_ONLY = frozenset({dict})
_targets_by_json: dict[str, tuple[Any, Any, Any]] = {}  # entities JSON -> entity_targets()
_NO_ENTITY: dict[str, Any] = {}
_HOST_ENTITY_TYPES = ("datasource", "node")


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
    },
    numbers=("rt", "start", "end", "dpt", "cn1", "cn2"),
    constants=(("cat", "queries"),),
    strings=(
        "externalId",
        ("act", "suser", "suid"),
        ("src", "c6a2"),
        ("duser", "dhost"),
        "msg",
        ("request", "requestMethod", "fname"),
        ("cs1", "cs2", "cs3"),
        "cs4",
        ("cs5",),
        "cs6",
    ),
    name="queries",
)


def map_query(event: dict[str, Any]) -> Mapped:
    """Queries: account -> suser/suid/src, target -> dhost/dpt, remote user -> duser,
    body -> msg, duration and record count -> cn1/cn2."""
    get = event.get
    category = get("queryCategory")
    if not isinstance(category, str):
        category = ""
    state = get("queryState")
    if not isinstance(state, str):
        state = ""
    host, port = split_target(get("target"))
    capture = get("capture")
    capture = capture if type(capture) is dict else _NO_ENTITY
    resource_name, resource_type = get("resourceName"), get("resourceType")
    start = epoch_ms(get("timestamp"))
    strings = (
        get("id"),
        (
            category,
            get("accountEmail") or _full_name(get("accountFirstName"), get("accountLastName")),
            get("accountId"),
        ),
        source_address(get("clientIp") or get("sourceIp")),
        (get("remoteIdentityUsername") or get("identityAliasUsername"), host or resource_name),
        get("queryBody"),
        (capture.get("requestUri"), capture.get("requestMethod"), capture.get("fileName")),
        (resource_name, resource_type, get("resourceId")),
        get("queryId"),
        state,
        get("queryHash"),
    )
    numbers = (start, start, epoch_ms(get("completedAt")), port, get("durationMs"), get("recordCount"))
    what = _text(resource_type) or category or "resource"
    class_id = f"query:{category}" if category else "query"
    return class_id, f"{what} query {state}".strip(), numbers, strings, QUERY_LAYOUT


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
        },
        numbers=("rt", "deviceCustomDate1"),
        constants=(("cat", log_type),),
        strings=(
            "externalId",
            ("act", "duser", "duid", "dhost"),
            "cs1",
            ("cs2", "cs3", "cs4"),
            "cs5",
            "cs6",
        ),
        name=log_type,
    )
    is_account = entity_key == "account"
    is_host = entity_key in _HOST_KEYS

    def map_history(event: dict[str, Any]) -> Mapped:
        get = event.get
        entity = get(entity_key)
        entity = entity if type(entity) is dict else _NO_ENTITY
        entity_get = entity.get
        deleted = epoch_ms(get("deletedAt"))
        change = "changed" if deleted is None else "deleted"
        record_id = get("id")
        strings = (
            external_id(record_id),
            (
                change,
                entity_get("email") or (entity_get("name") if is_account else None),
                entity_get("accountId") or (entity_get("id") if is_account else None),
                entity_get("hostname") or (entity_get("name") if is_host else None),
            ),
            get("activityId"),
            (
                (entity_get("type") if polymorphic else None) or entity_key,
                entity_get("id"),
                entity_get("name"),
            ),
            compact_json(entity),
            record_id,
        )
        numbers = (epoch_ms(get("timestamp")), deleted)
        return log_type, f"{label} {change}", numbers, strings, layout

    return map_history


GENERIC_LAYOUT = Layout(
    {"cs6": "id"}, numbers=("rt",), strings=(("cat",), "externalId", "cs6"), name="generic"
)


def map_generic(event: dict[str, Any]) -> Mapped:
    """A stream this build has no mapping for: time, category and id, nothing guessed."""
    log_type = _text(event.get("logType")) or "event"
    record_id = event.get("id")
    numbers = (epoch_ms(event.get("timestamp")),)
    return log_type, log_type, numbers, (log_type, external_id(record_id), record_id), GENERIC_LAYOUT
