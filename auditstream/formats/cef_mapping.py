"""Which event field goes to which CEF header field and extension key, per stream kind.

Each stream kind has one ``FieldTable``: its class id and name, then every extension key
with the expression of its value and its label, in output order. Both halves of the
encoding come from that one table, so no key can be written without its value or the other
way round: ``FieldTable.layout`` (which keys, in which order, grouped and labelled how;
``cef_render`` generates the renderer from it) and ``compile_mapper``, which generates the
mapper: a function reading an event dict (after redaction: a dropped field is simply
missing, so it can never reappear in CEF) and returning a ``Mapped``: the class id, the
name, the number and string values in the layout's order, and the layout. A generated
mapper is the function one would write by hand, each value in its slot, so the table costs
nothing per event. The expressions only wire event fields to keys; what they call (address
classification, targets, outcomes) is ordinary code below. ``cef.CefEncoder`` adds the
severity, applies lengths and escaping, drops empty values, and writes a label right before
its field only when the field is written, so no label ever dangles. docs/cef.md is the
human-readable form of this module.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from auditstream.formats.cache import remember
from auditstream.formats.cef_escape import DEFAULT_LIMIT, EXTENSION_LIMITS, escape_extension, short_id
from auditstream.formats.protovalues import epoch_ms

Pairs = list[tuple[str, Any]]
Values = tuple[Any, ...]


class Layout:
    """How one mapper's extension is written, computed once instead of once per event
    (``FieldTable.layout`` derives it from the table the mapper is generated from).

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

    def position(self, key: str) -> tuple[int, int | None]:
        """Where a mapper returns ``key``'s value: its group, and its index in the group
        (None when the value stands alone: a bare key or a one-key group)."""
        index = self.string_keys.index(key)
        for number, (start, stop, _) in enumerate(self.groups):
            if start <= index < stop:
                return number, index - start if stop - start > 1 else None
        raise KeyError(f"{key} is a constant of layout {self.name}, not a mapped value")


# class id, name, number values, string values (in the layout's key order), layout
Mapped = tuple[str, str, Values, Values, Layout]
Mapper = Callable[[dict[str, Any]], Mapped]


class Field(NamedTuple):
    """One extension key, the expression of its value, and the label of a custom field.

    An expression may use ``get`` (the event's), the names its table's ``let`` assigns, this
    module's ``HELPERS`` and the names given to ``compile_mapper``.
    """

    key: str
    value: str
    label: str | None = None


@dataclass(frozen=True)
class FieldTable:
    """What one stream kind writes. ``strings`` lists bare fields (values that differ on
    nearly every event) and tuples of fields (values that repeat together, rendered once per
    distinct combination: see ``Layout``). ``let`` assigns what several expressions share,
    once per event and in order, as ``(target, expression)``."""

    name: str
    class_id: str
    event_name: str
    numbers: tuple[Field, ...]
    strings: tuple[Field | tuple[Field, ...], ...]
    let: tuple[tuple[str, str], ...] = ()
    constants: tuple[tuple[str, str], ...] = ()

    def layout(self) -> Layout:
        fields = [*self.numbers, *(f for g in self.strings for f in ((g,) if isinstance(g, Field) else g))]
        return Layout(
            {field.key: field.label for field in fields if field.label is not None},
            numbers=tuple(field.key for field in self.numbers),
            strings=tuple(g.key if isinstance(g, Field) else tuple(f.key for f in g) for g in self.strings),
            name=self.name,
            constants=self.constants,
        )


def compile_mapper(table: FieldTable, **names: Any) -> tuple[Mapper, Layout]:
    """The table's mapper and layout. The mapper is generated as::

        def map_event(event):
            get = event.get
            <target> = <expression>  # each let, in order
            return <class id>, <name>, (<number values>,), (<string values, grouped>,), _layout

    A group whose values are, in order, the names one let unpacks (``src, c6a2``) takes that
    let's tuple as it comes instead of a copy. ``names`` are constants the expressions refer
    to (a history stream's entity key...).
    """
    groups = {
        tuple(f.value for f in g): f"_g{n}"
        for n, g in enumerate(table.strings)
        if not isinstance(g, Field) and len(g) > 1
    }
    passed: set[str] = set()
    lines = ["def map_event(event):", "    get = event.get"]
    for target, expression in table.let:
        whole = groups.get(tuple(name.strip() for name in target.split(",")))
        if whole is None:
            lines.append(f"    {target} = {expression}")
        else:
            passed.add(whole)
            lines += [f"    {whole} = {expression}", f"    {target} = {whole}"]

    def value(group: Field | tuple[Field, ...]) -> str:
        if isinstance(group, Field):
            return group.value
        if len(group) == 1:  # a one-key group's value stands alone (Layout)
            return group[0].value
        whole = groups[tuple(field.value for field in group)]
        return whole if whole in passed else f"({', '.join(field.value for field in group)})"

    numbers = "".join(f"{field.value}, " for field in table.numbers)
    strings = "".join(f"{value(group)}, " for group in table.strings)
    lines.append(f"    return ({table.class_id}), ({table.event_name}), ({numbers}), ({strings}), _layout")
    layout = table.layout()
    namespace: dict[str, Any] = {**HELPERS, **names, "_layout": layout}
    exec(compile("\n".join(lines) + "\n", f"<cef mapper {table.name}>", "exec"), namespace)  # see above
    mapper: Mapper = namespace["map_event"]
    return mapper, layout


def text_of(expression: str, default: str = "") -> str:
    """Source of ``expression``'s value if it is text, else ``default`` (inline: a function
    call per field would cost as much as the rest of the field)."""
    return f"(_v if isinstance(_v := {expression}, str) else {default!r})"


def object_of(expression: str) -> str:
    """Source of ``expression``'s value if it is an object (dict), else an empty one."""
    return f"(_v if type(_v := {expression}) is dict else _NO_ENTITY)"


SOURCE_IPV6_LABEL = "sourceIPv6Address"
FAILURE_VERBS = re.compile(
    r"failed|denied|rejected|locked due to|attempt(ed)? to (login|enroll)", re.IGNORECASE
)

# Verbs, addresses, targets and entities repeat across events: work each distinct one out once.
_addresses: dict[str, tuple[str | None, str | None]] = {}
_outcomes: dict[str, str] = {}
_targets: dict[str, tuple[str, int | None]] = {}
_entities: dict[str, tuple[tuple[Any, Any, Any], str]] = {}  # entities JSON -> activity_entities()


def source_address(value: Any) -> tuple[str | None, str | None]:
    """(``src``, ``c6a2``): IPv4 addresses go to ``src``, IPv6 to ``c6a2``, anything else nowhere.

    CEF's ``src`` holds IPv4 only; ArcSight carries IPv6 sources in the custom IPv6 field
    ``c6a2``. A value that is not an IP address (or is a hash after redaction) is not
    guessed into a network field: JSON keeps it.
    """
    if not isinstance(value, str) or not value:
        return _NO_ADDRESS
    slots = _addresses.get(value)
    if slots is None:
        key = _classify_ip(value)
        slots = (value, None) if key == "src" else (None, value) if key == "c6a2" else _NO_ADDRESS
        remember(_addresses, value, slots)
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
        known = remember(_outcomes, verb, "failure" if FAILURE_VERBS.search(verb) else "success")
    return known


def split_target(target: Any) -> tuple[str, int | None]:
    """``host:port`` (or ``[v6]:port``) -> (host, port); anything else -> (target, None)."""
    if not isinstance(target, str) or not target:
        return "", None
    known = _targets.get(target)
    if known is None:
        known = remember(_targets, target, _split_target(target))
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


def activity_entities(event: dict[str, Any]) -> tuple[tuple[Any, Any, Any], str | None]:
    """((duser, duid, dhost), cs3) of an activity: the first user entity's email (or name)
    and id, the first datasource or node entity's name; the entities as compact JSON.

    The usual ``entityDetails``, a list of objects, is serialized for cs3 anyway, and that
    JSON doubles as the key of the targets it holds (entities recur from event to event).
    """
    details = event.get("entityDetails")
    if type(details) is list and details and _OBJECTS_ONLY.issuperset(map(type, details)):
        text = _dumps(details).decode("utf-8")
        known = _entities.get(text)
        if known is None:
            known = remember(_entities, text, (_entity_targets(details), text))
        return known
    return _entity_targets(details), compact_json(details if details is not None else event.get("entities"))


def _entity_targets(details: Any) -> tuple[Any, Any, Any]:
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


def _full_name(first: Any, last: Any) -> str:
    return " ".join(part for part in (first, last) if type(part) is str and part)


_dumps = orjson.dumps
_OBJECTS_ONLY = frozenset({dict})
_NO_ENTITY: dict[str, Any] = {}
_HOST_ENTITY_TYPES = ("datasource", "node")
_HOST_KEYS = ("resource", "node")

HELPERS: dict[str, Any] = {
    "_outcomes": _outcomes,
    "_NO_ENTITY": _NO_ENTITY,
    **{f.__name__: f for f in (epoch_ms, source_address, outcome, split_target, external_id, compact_json)},
    **{f.__name__: f for f in (activity_entities, _full_name)},
}

# Activities: actor -> suser/suid/src, first user entity -> duser/duid, first datasource or
# node entity -> dhost, description -> msg.
# Groups of fields several tables share. The source address (IPv4 in src, IPv6 in a custom
# field: CEF's src takes IPv4 only). A query and a replay chunk are records of one session:
# its user, and the identity and host it reached, come from the same fields of both.
SOURCE_ADDRESS = (Field("src", "src"), Field("c6a2", "c6a2", SOURCE_IPV6_LABEL))
SESSION_USER = Field(
    "suser", "get('accountEmail') or _full_name(get('accountFirstName'), get('accountLastName'))"
)
SESSION_USER_ID = Field("suid", "get('accountId')")
SESSION_TARGET = (
    Field("duser", "get('remoteIdentityUsername') or get('identityAliasUsername')"),
    Field("dhost", "host or resource_name"),
)

ACTIVITY_FIELDS = FieldTable(
    "activities",
    let=(
        ("verb", text_of("get('activity')")),
        ("name", "verb or 'activity'"),
        ("actor_name", "get('actorName')"),
        ("src, c6a2", "source_address(get('ipAddress'))"),
        ("targets, entities_json", "activity_entities(event)"),
        ("duser, duid, dhost", "targets"),
    ),
    class_id="name",
    event_name="name",
    numbers=(Field("rt", "epoch_ms(get('timestamp'))"),),
    constants=(("cat", "activities"),),
    strings=(
        Field("externalId", "get('id')"),
        (
            Field("act", "verb"),
            Field("outcome", "_outcomes.get(verb) or outcome(verb)"),
            Field("suser", "get('actorEmail') or actor_name"),
            Field("suid", "get('actorAccountID')"),
        ),
        SOURCE_ADDRESS,
        (Field("duser", "duser"), Field("duid", "duid"), Field("dhost", "dhost")),
        Field("msg", "get('description')"),
        (
            Field("requestClientApplication", "get('userAgent')"),
            Field("cs1", "actor_name", "actorName"),
            Field("cs2", "get('actorExternalID')", "actorExternalID"),
        ),
        (Field("cs3", "entities_json", "entities"),),
    ),
)
map_activity, ACTIVITY_LAYOUT = compile_mapper(ACTIVITY_FIELDS)

# Queries: account -> suser/suid/src, target -> dhost/dpt, remote user -> duser, body -> msg,
# duration and record count -> cn1/cn2.
QUERY_FIELDS = FieldTable(
    "queries",
    let=(
        ("category", text_of("get('queryCategory')")),
        ("state", text_of("get('queryState')")),
        ("host, port", "split_target(get('target'))"),
        ("src, c6a2", "source_address(get('clientIp') or get('sourceIp'))"),
        ("capture", object_of("get('capture')")),
        ("resource_name", "get('resourceName')"),
        ("resource_type", "get('resourceType')"),
        ("start", "epoch_ms(get('timestamp'))"),
    ),
    class_id="'query:' + category if category else 'query'",
    event_name=f"(({text_of('resource_type')} or category or 'resource') + ' query ' + state).strip()",
    numbers=(
        Field("rt", "start"),
        Field("start", "start"),
        Field("end", "epoch_ms(get('completedAt'))"),
        Field("dpt", "port"),
        Field("cn1", "get('durationMs')", "durationMs"),
        Field("cn2", "get('recordCount')", "recordCount"),
    ),
    constants=(("cat", "queries"),),
    strings=(
        Field("externalId", "get('id')"),
        (
            Field("act", "category"),
            SESSION_USER,
            SESSION_USER_ID,
        ),
        SOURCE_ADDRESS,
        SESSION_TARGET,
        Field("msg", "get('queryBody')"),
        (
            Field("request", "capture.get('requestUri')"),
            Field("requestMethod", "capture.get('requestMethod')"),
            Field("fname", "capture.get('fileName')"),
        ),
        (
            Field("cs1", "resource_name", "resourceName"),
            Field("cs2", "resource_type", "resourceType"),
            Field("cs3", "get('resourceId')", "resourceId"),
        ),
        Field("cs4", "get('queryId')", "queryId"),
        (Field("cs5", "state", "queryState"),),
        Field("cs6", "get('queryHash')", "queryHash"),
    ),
)
map_query, QUERY_LAYOUT = compile_mapper(QUERY_FIELDS)


def history_mapper(log_type: str, entity_key: str, polymorphic: bool) -> Mapper:
    """History streams: the changed entity -> cs2..cs5 (type, id, name, full JSON), its
    account -> duser/duid, its host -> dhost; ``deletedAt`` -> deviceCustomDate1.

    ``entityType`` is the oneof member of a polymorphic entity (``postgres``, ``user``) and
    the entity key otherwise (an AccessRequestEvent's own ``type`` field is not its type).
    """
    table = FieldTable(
        log_type,
        let=(
            ("entity", object_of("get(ENTITY_KEY)")),
            ("entity_get", "entity.get"),
            ("deleted", "epoch_ms(get('deletedAt'))"),
            ("change", "'changed' if deleted is None else 'deleted'"),
            ("record_id", "get('id')"),
        ),
        class_id="LOG_TYPE",
        event_name="LABEL + change",
        numbers=(
            Field("rt", "epoch_ms(get('timestamp'))"),
            Field("deviceCustomDate1", "deleted", "deletedAt"),
        ),
        constants=(("cat", log_type),),
        strings=(
            Field("externalId", "external_id(record_id)"),
            (
                Field("act", "change"),
                Field("duser", "entity_get('email') or (entity_get('name') if IS_ACCOUNT else None)"),
                Field("duid", "entity_get('accountId') or (entity_get('id') if IS_ACCOUNT else None)"),
                Field("dhost", "entity_get('hostname') or (entity_get('name') if IS_HOST else None)"),
            ),
            Field("cs1", "get('activityId')", "activityId"),
            (
                Field("cs2", "(entity_get('type') if POLYMORPHIC else None) or ENTITY_KEY", "entityType"),
                Field("cs3", "entity_get('id')", "entityId"),
                Field("cs4", "entity_get('name')", "entityName"),
            ),
            Field("cs5", "compact_json(entity)", entity_key),
            Field("cs6", "record_id", "id"),
        ),
    )
    mapper, _ = compile_mapper(
        table,
        LOG_TYPE=log_type,
        ENTITY_KEY=entity_key,
        LABEL=re.sub(r"(?<!^)(?=[A-Z])", " ", entity_key).lower() + " ",
        POLYMORPHIC=polymorphic,
        IS_ACCOUNT=entity_key == "account",
        IS_HOST=entity_key in _HOST_KEYS,
    )
    return mapper


# Secret-access logs: who (suid) did what (act) to which managed secret (cs1) in which
# secret engine (cs2); the debug text -> msg.
SECRET_LOG_FIELDS = FieldTable(
    "managed_secret_logs",
    let=(("action", text_of("get('action')")),),
    class_id="'managed_secret:' + action if action else 'managed_secret'",
    event_name="('managed secret ' + action).strip()",
    numbers=(Field("rt", "epoch_ms(get('timestamp'))"),),
    constants=(("cat", "managed_secret_logs"),),
    strings=(
        Field("externalId", "external_id(get('id'))"),
        (Field("act", "action"), Field("suid", "get('accountId')")),
        Field("msg", "get('debug')"),
        (
            Field("cs1", "get('managedSecretId')", "managedSecretId"),
            Field("cs2", "get('secretEngineId')", "secretEngineId"),
        ),
        Field("cs6", "get('id')", "id"),
    ),
)
map_secret_log, SECRET_LOG_LAYOUT = compile_mapper(SECRET_LOG_FIELDS)

# Replay chunks: the session's account -> suser/suid/src, its target -> dhost/dpt, the
# decoded (masked) terminal text -> msg, the chunk's position -> cn1.
REPLAY_FIELDS = FieldTable(
    "replays",
    let=(
        ("category", text_of("get('queryCategory')")),
        ("host, port", "split_target(get('target'))"),
        ("src, c6a2", "source_address(get('clientIp') or get('sourceIp'))"),
        ("resource_name", "get('resourceName')"),
    ),
    class_id="'replay:' + category if category else 'replay'",
    event_name="((category + ' ') if category else '') + 'session replay'",
    numbers=(
        Field("rt", "epoch_ms(get('timestamp'))"),
        Field("dpt", "port"),
        Field("cn1", "get('chunkId')", "chunkId"),
    ),
    constants=(("cat", "replays"),),
    strings=(
        Field("externalId", "external_id(get('id'))"),
        (
            Field("act", "'replay'"),
            SESSION_USER,
            SESSION_USER_ID,
        ),
        SOURCE_ADDRESS,
        SESSION_TARGET,
        Field("msg", "get('text')"),
        (
            Field("cs1", "resource_name", "resourceName"),
            Field("cs2", "get('resourceType')", "resourceType"),
            Field("cs3", "get('resourceId')", "resourceId"),
        ),
        Field("cs4", "get('queryUUID')", "queryId"),
    ),
)
map_replay, REPLAY_LAYOUT = compile_mapper(REPLAY_FIELDS)

# A stream this build has no mapping for: time, category and id, nothing guessed.
GENERIC_FIELDS = FieldTable(
    "generic",
    let=(("log_type", text_of("get('logType')") + " or 'event'"), ("record_id", "get('id')")),
    class_id="log_type",
    event_name="log_type",
    numbers=(Field("rt", "epoch_ms(get('timestamp'))"),),
    strings=(
        (Field("cat", "log_type"),),
        Field("externalId", "external_id(record_id)"),
        Field("cs6", "record_id", "id"),
    ),
)
map_generic, GENERIC_LAYOUT = compile_mapper(GENERIC_FIELDS)
