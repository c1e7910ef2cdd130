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

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

import auditstream
from auditstream.formats import cef_escape, compiled, severity
from auditstream.formats.cef_escape import escape_header
from auditstream.formats.cef_mapping import (
    ACTIVITY_LAYOUT,
    ACTIVITY_VERB_GROUP,
    Mapper,
    history_mapper,
    map_activity,
    map_generic,
    map_query,
)
from auditstream.formats.cef_render import render_extension, renderer_for
from auditstream.formats.events import Event, history_entity_key
from auditstream.sdm.registry import STREAMS, StreamKind

__all__ = ["CefEncoder", "CefSettings", "render_extension"]  # render_extension: for tests

VENDOR = "StrongDM"
PRODUCT = "auditstream"

Severity = Annotated[int, Field(ge=0, le=10)]


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
        self._activity_heads: dict[str, str] = {}  # activity verb -> line head up to the extension
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
        # One encoding function per stream, its mapper and renderer bound in: the hot path
        # dispatches once on logType and calls straight through.
        self._encoders: dict[str, Callable[[Event], bytes]] = {
            name: self._activity_encoder() if mapper is map_activity else self._stream_encoder(mapper, name)
            for name, mapper in self._mappers.items()
        }
        self._generic_encoder = self._stream_encoder(map_generic)

    def encode(self, event: Event) -> str:
        """One CEF line for one event."""
        return self.encode_bytes(event).decode("utf-8")

    def encode_bytes(self, event: Event) -> bytes:
        """One CEF line for one event as UTF-8 bytes, what sinks write (the hot path)."""
        log_type = event.get("logType")
        encode = self._encoders.get(log_type) if type(log_type) is str else None
        return (encode or self._generic_encoder)(event)

    def _stream_encoder(self, mapper: Mapper, log_type: str | None = None) -> Callable[[Event], bytes]:
        """The encoding function of one stream (``log_type``), or of any unknown one (None)."""
        headers, header_of, prefix = self._headers, self._header, self._prefix
        severity_of = self._stream_severity(mapper, log_type)

        def encode(event: Event) -> bytes:
            class_id, name, numbers, strings, layout = mapper(event)
            header = headers.get((class_id, name)) or header_of(class_id, name)
            extension = (layout.renderer or renderer_for(layout))(numbers, strings)
            return f"{prefix}{header}{severity_of(event)}|{extension}".encode()

        return encode

    def _stream_severity(self, mapper: Mapper, log_type: str | None) -> Callable[[Event], int]:
        """``severity_of`` for one known non-activity stream, with its constants resolved."""
        if log_type is None:
            return lambda event: self.severity_of(event, mapper)
        override = self._overrides.get(log_type)
        if override is not None:
            return lambda event: override
        if mapper is map_query:
            return lambda event: severity.QUERY_SEVERITY
        return lambda event: (
            severity.HISTORY_SEVERITY if event.get("deletedAt") is None else severity.HISTORY_DELETED_SEVERITY
        )

    def _activity_encoder(self) -> Callable[[Event], bytes]:
        """Activities: header and severity both follow from the verb, one lookup per event."""
        heads, head_of, render = self._activity_heads, self._activity_head, renderer_for(ACTIVITY_LAYOUT)

        def encode(event: Event) -> bytes:
            class_id, name, numbers, strings, _ = map_activity(event)
            verb = strings[ACTIVITY_VERB_GROUP][0]
            head = heads.get(verb) or head_of(event, class_id, name, verb)
            return (head + render(numbers, strings)).encode("utf-8")

        return encode

    def _activity_head(self, event: Event, class_id: str, name: str, verb: str) -> str:
        """``CEF:0|...|<class id>|<name>|<severity>|`` of an activity verb, remembered."""
        header = self._headers.get((class_id, name)) or self._header(class_id, name)
        head = f"{self._prefix}{header}{self.severity_of(event, map_activity)}|"
        if len(self._activity_heads) >= _HEADER_CACHE_LIMIT:
            self._activity_heads.clear()
        self._activity_heads[verb] = head
        return head

    def _header(self, class_id: str, name: str) -> str:
        """``<class id>|<name>|``, escaped once per distinct pair (they repeat)."""
        class_text = escape_header(class_id, cef_escape.CLASS_ID_MAX)
        header = f"{class_text}|{escape_header(name, cef_escape.NAME_MAX)}|"
        if len(self._headers) >= _HEADER_CACHE_LIMIT:
            self._headers.clear()
        self._headers[(class_id, name)] = header
        return header

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


_HEADER_CACHE_LIMIT = 4096
