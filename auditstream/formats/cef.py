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
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

import auditstream
from auditstream.formats import cef_escape, compiled, severity
from auditstream.formats.cache import remember
from auditstream.formats.cef_escape import escape_header
from auditstream.formats.cef_mapping import (
    ACTIVITY_LAYOUT,
    Mapper,
    history_mapper,
    map_activity,
    map_generic,
    map_query,
    map_replay,
    map_secret_log,
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
        self._headers: dict[tuple[str, str], str] = {}  # class id and name repeat: escape once
        self._activity_heads: dict[str, str] = {}  # activity verb -> line head up to the extension
        # One encoding function per stream, its mapper, renderer and severity rule bound in:
        # the hot path dispatches once on logType and calls straight through.
        self._encoders: dict[str, Callable[[Event], bytes]] = {}
        self._severities: dict[str, Callable[[Event], int]] = {}
        for spec in STREAMS.values():
            if spec.kind is StreamKind.ACTIVITY:
                self._severities[spec.name] = self._activity_severity(spec.name)
                self._encoders[spec.name] = self._activity_encoder(spec.name)
                continue
            if spec.kind is StreamKind.QUERY:
                mapper = map_query
            elif spec.kind is StreamKind.SECRET_LOG:
                mapper = map_secret_log
            elif spec.kind is StreamKind.REPLAY:
                mapper = map_replay
            else:
                entity = spec.record_class.DESCRIPTOR.fields_by_name[spec.entity_field].message_type
                mapper = history_mapper(spec.name, history_entity_key(spec), compiled.is_polymorphic(entity))
            self._severities[spec.name] = self._stream_severity(spec.name, spec.kind)
            self._encoders[spec.name] = self._stream_encoder(mapper, self._severities[spec.name])
        self._generic_encoder = self._stream_encoder(map_generic, self._generic_severity)

    def encode(self, event: Event) -> str:
        """One CEF line for one event."""
        return self.encode_bytes(event).decode("utf-8")

    def encode_bytes(self, event: Event) -> bytes:
        """One CEF line for one event as UTF-8 bytes, what sinks write (the hot path)."""
        log_type = event.get("logType")
        encode = self._encoders.get(log_type) if type(log_type) is str else None
        return (encode or self._generic_encoder)(event)

    # -- severity: configured override for the verb, then for the stream, then built in ----

    def severity_of(self, event: Event) -> int:
        """The severity of an event under these settings (what its line's header carries)."""
        log_type = event.get("logType")
        rule = self._severities.get(log_type) if type(log_type) is str else None
        return (rule or self._generic_severity)(event)

    def _activity_severity(self, log_type: str) -> Callable[[Event], int]:
        return lambda event: self._verb_severity(map_activity(event)[3][VERB_GROUP][VERB_INDEX], log_type)

    def _verb_severity(self, verb: str, log_type: str) -> int:
        """An activity's: the stream's override ranks below the verb's, above the built-in rules."""
        override = self._overrides.get(verb, self._overrides.get(log_type))
        if override is not None:
            return override
        built_in = severity.activity_severity(verb)
        return self._default if built_in is None else built_in

    def _stream_severity(self, log_type: str, kind: StreamKind) -> Callable[[Event], int]:
        """The severity rule of one query or history stream, its constants resolved."""
        override = self._overrides.get(log_type)
        if override is not None:
            return lambda event: override
        if kind in (StreamKind.QUERY, StreamKind.REPLAY, StreamKind.SECRET_LOG):
            return lambda event: severity.QUERY_SEVERITY
        return lambda event: (
            severity.HISTORY_SEVERITY if event.get("deletedAt") is None else severity.HISTORY_DELETED_SEVERITY
        )

    def _generic_severity(self, event: Event) -> int:
        """A stream this build has no mapping for: its override, else ``default_severity``."""
        log_type = event.get("logType")
        override = self._overrides.get(log_type) if isinstance(log_type, str) else None
        return self._default if override is None else override

    # -- encoding -----------------------------------------------------------------------

    def _stream_encoder(
        self, mapper: Mapper, severity_of: Callable[[Event], int]
    ) -> Callable[[Event], bytes]:
        """The encoding function of one stream (or of any stream without a mapping)."""
        headers, header_of, prefix = self._headers, self._header, self._prefix

        def encode(event: Event) -> bytes:
            class_id, name, numbers, strings, layout = mapper(event)
            header = headers.get((class_id, name)) or header_of(class_id, name)
            extension = (layout.renderer or renderer_for(layout))(numbers, strings)
            return f"{prefix}{header}{severity_of(event)}|{extension}".encode()

        return encode

    def _activity_encoder(self, log_type: str) -> Callable[[Event], bytes]:
        """Activities: header and severity both follow from the verb, one lookup per event."""
        heads, prefix, render = self._activity_heads, self._prefix, renderer_for(ACTIVITY_LAYOUT)
        group, index = VERB_GROUP, VERB_INDEX

        def head_of(class_id: str, name: str, verb: str) -> str:
            """``CEF:0|...|<class id>|<name>|<severity>|`` of a verb, remembered."""
            header = self._headers.get((class_id, name)) or self._header(class_id, name)
            return remember(heads, verb, f"{prefix}{header}{self._verb_severity(verb, log_type)}|")

        def encode(event: Event) -> bytes:
            class_id, name, numbers, strings, _ = map_activity(event)
            verb = strings[group][index]
            head = heads.get(verb) or head_of(class_id, name, verb)
            return (head + render(numbers, strings)).encode("utf-8")

        return encode

    def _header(self, class_id: str, name: str) -> str:
        """``<class id>|<name>|``, escaped once per distinct pair (they repeat)."""
        class_text = escape_header(class_id, cef_escape.CLASS_ID_MAX)
        return remember(
            self._headers, (class_id, name), f"{class_text}|{escape_header(name, cef_escape.NAME_MAX)}|"
        )


def _verb_position() -> tuple[int, int]:
    """Where ``map_activity`` returns the verb (``act``): its group, its index in the group."""
    group, index = ACTIVITY_LAYOUT.position("act")
    assert index is not None  # the verb shares its group with its outcome and actor
    return group, index


VERB_GROUP, VERB_INDEX = _verb_position()  # the mapper decides what the verb is, once
