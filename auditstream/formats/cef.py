"""ArcSight CEF encoding of events, one line each:
``CEF:0|StrongDM|auditstream|<version>|<class id>|<name>|<severity>|<extension>``.

One event is one line, whatever its content: header and extension escaping follow the CEF
specification exactly (``cef_escape``), every value is cut to its dictionary length with a
marker, and empty values are left out rather than written as ``key=``. What goes where is
``cef_mapping`` (documented in docs/cef.md). Severity is, in order: a configured override for
the activity verb, a configured override for the stream (``logType``), the built-in default
for the verb or stream (``severity``), then ``default_severity``.
"""

from __future__ import annotations

from operator import add
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

import auditstream
from auditstream.formats import cef_escape, compiled, severity
from auditstream.formats.cef_escape import escape_extension, escape_header, needs_extension_escape, truncate
from auditstream.formats.cef_mapping import (
    Layout,
    Mapper,
    Pairs,
    history_mapper,
    map_activity,
    map_generic,
    map_query,
)
from auditstream.formats.events import Event, history_entity_key
from auditstream.sdm.registry import STREAMS, StreamKind

VENDOR = "StrongDM"
PRODUCT = "auditstream"

Severity = Annotated[int, Field(ge=0, le=10)]
PLAIN_LAYOUT = Layout({})


class CefSettings(BaseModel):
    """``[cef]``: severity policy. Vendor, product and version are fixed by the build."""

    model_config = ConfigDict(extra="forbid")

    # Keys are activity verbs ("user deleted") or stream names ("queries", "roles_history").
    severity: dict[str, Severity] = Field(default_factory=dict)
    # For activity verbs no built-in rule knows, and streams without a mapping.
    default_severity: Severity = 5


class CefEncoder:
    """Encodes event dicts as CEF lines (``str``, no trailing newline)."""

    def __init__(self, settings: CefSettings | None = None, *, device_version: str | None = None) -> None:
        settings = settings or CefSettings()
        version = device_version if device_version is not None else auditstream.__version__
        self._prefix = "|".join(
            (
                "CEF:0",
                escape_header(VENDOR, cef_escape.VENDOR_MAX),
                escape_header(PRODUCT, cef_escape.PRODUCT_MAX),
                escape_header(version, cef_escape.VERSION_MAX),
                "",
            )
        )
        self._overrides = dict(settings.severity)
        self._default = settings.default_severity
        self._verb_severity: dict[str, int] = {}
        self._headers: dict[tuple[str, str], str] = {}  # class id and name repeat: escape once
        self._mappers: dict[str, Mapper] = {}
        for spec in STREAMS.values():
            if spec.kind is StreamKind.ACTIVITY:
                self._mappers[spec.name] = map_activity
            elif spec.kind is StreamKind.QUERY:
                self._mappers[spec.name] = map_query
            else:
                entity = spec.record_class.DESCRIPTOR.fields_by_name[spec.entity_field].message_type
                self._mappers[spec.name] = history_mapper(
                    spec.name, history_entity_key(spec), compiled.is_polymorphic(entity)
                )

    def encode(self, event: Event) -> str:
        """One CEF line for one event."""
        log_type = event.get("logType")
        mapper = self._mappers.get(log_type, map_generic) if type(log_type) is str else map_generic
        class_id, name, strings, numbers, layout = mapper(event)
        header = self._headers.get((class_id, name))
        if header is None:
            class_text = escape_header(class_id, cef_escape.CLASS_ID_MAX)
            header = f"{class_text}|{escape_header(name, cef_escape.NAME_MAX)}|"
            if len(self._headers) >= _HEADER_CACHE_LIMIT:
                self._headers.clear()
            self._headers[(class_id, name)] = header
        extension = render_extension(strings, numbers, layout)
        return f"{self._prefix}{header}{self.severity_of(event, mapper)}|{extension}"

    def severity_of(self, event: Event, mapper: Mapper | None = None) -> int:
        """The severity of an event under these settings."""
        log_type = event.get("logType")
        if mapper is None:
            mapper = self._mappers.get(log_type, map_generic) if type(log_type) is str else map_generic
        if mapper is map_activity:
            verb = event.get("activity")
            verb = verb if isinstance(verb, str) else ""
            cached = self._verb_severity.get(verb)
            if cached is None:
                cached = self._resolve_verb(verb, log_type)
                if len(self._verb_severity) >= _HEADER_CACHE_LIMIT:  # bounded, even for junk verbs
                    self._verb_severity.clear()
                self._verb_severity[verb] = cached
            return cached
        if isinstance(log_type, str) and log_type in self._overrides:
            return self._overrides[log_type]
        if mapper is map_query:
            return severity.QUERY_SEVERITY
        if mapper is map_generic:
            return self._default
        if event.get("deletedAt") is not None:
            return severity.HISTORY_DELETED_SEVERITY
        return severity.HISTORY_SEVERITY

    def _resolve_verb(self, verb: str, log_type: Any) -> int:
        if verb in self._overrides:
            return self._overrides[verb]
        if isinstance(log_type, str) and log_type in self._overrides:
            return self._overrides[log_type]
        built_in = severity.activity_severity(verb)
        return self._default if built_in is None else built_in


def render_extension(strings: Pairs, numbers: Pairs, layout: Layout = PLAIN_LAYOUT) -> str:
    """``key=value`` pairs joined by spaces: empty values skipped, lengths cut, values escaped.

    Numeric keys (times, counts, ports) take integers only: a value that is not one (for
    instance a field replaced by its hash) is left out, never mistyped. A field with a label
    is written as ``<key>Label=<label> <key>=<value>``. This is the CEF hot path: one plain
    loop with precomputed prefixes, then a single escape check over all values joined by NUL
    (escaping them together when no value holds a NUL itself), measured fastest here.
    """
    fields = layout.fields  # direct dict access: a method call per value cost 15% here
    parts = [f"{layout.field(key)[1]}{value}" for key, value in numbers if type(value) is int]
    prefixes: list[str] = []
    values: list[str] = []
    for key, value in strings:
        if not value:
            continue
        limit, prefix = fields.get(key) or layout.field(key)
        if type(value) is not str:
            value = _as_text(value)
        if len(value) > limit:
            value = _cut(key, value, limit)
        prefixes.append(prefix)
        values.append(value)
    joined = _SEP.join(values)
    if needs_extension_escape(joined):
        if joined.count(_SEP) == len(values) - 1:
            values = escape_extension(joined).split(_SEP)
        else:
            values = [escape_extension(value) for value in values]
    parts.extend(map(add, prefixes, values))
    return " ".join(parts)


_SEP = "\x00"
_HEADER_CACHE_LIMIT = 4096


def _cut(key: str, value: str, limit: int) -> str:
    return cef_escape.short_id(value, limit) if key == "externalId" else truncate(value, limit)


def _as_text(value: Any) -> str:
    """A non-string value in a string field: booleans and numbers as text, the rest as JSON."""
    if type(value) is bool:
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value, default=str).decode("utf-8")
