"""Record -> event, once per record, with the configured redaction applied before fan-out."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import structlog

from auditstream.engine.observer import EngineObserver, NullEngineObserver
from auditstream.formats.events import FORMAT_VERSION, Event, event_converter
from auditstream.formats.redaction import Redactor
from auditstream.formats.settings import NormalizeSettings
from auditstream.sdm.registry import StreamSpec

log = structlog.get_logger("auditstream.normalize")


class Normalizer:
    """Callable turning one protobuf record of one stream into the event every sink encodes."""

    def __init__(
        self,
        spec: StreamSpec,
        redactor: Redactor | None = None,
        *,
        keep_credentials: bool = False,
        observer: EngineObserver | None = None,
    ) -> None:
        self._observer: EngineObserver = observer or NullEngineObserver()
        self._spec = spec
        self._redactor = redactor
        self._convert = event_converter(spec, keep_credentials=keep_credentials)

    def batch(self, records: Sequence[Any]) -> list[Event]:
        """Every record's event, in order: the per-page form of ``__call__``.

        The converter runs over the whole page in one comprehension (a Python call per
        record less); only when some record fails is the page redone record by record, so
        one odd record still costs only itself the fallback.
        """
        convert = self._convert
        try:
            events = [convert(record) for record in records]
        except Exception:
            return [self(record) for record in records]
        redactor = self._redactor
        if redactor is not None:
            events = [redactor.apply(event) for event in events]
        return events

    def __call__(self, record: Any) -> Event:
        try:
            event = self._convert(record)
        except Exception as exc:  # one odd record must neither stop the stream nor be lost
            event = self._fallback(record, exc)
        if self._redactor is not None:
            event = self._redactor.apply(event)
        return event

    def _fallback(self, record: Any, exc: Exception) -> Event:
        """The record as the API sent it (base64 protobuf), flagged, so the SIEM still gets it."""
        spec = self._spec
        self._observer.normalization_failed(spec.name)
        key = spec.record_key(record)
        log.error("record could not be normalized; sent raw", stream=spec.name, key=key, error=repr(exc))
        return {
            "logType": spec.name,
            "formatVersion": FORMAT_VERSION,
            "id": key,
            "timestamp": None,
            "normalizationError": repr(exc),
            "rawProtobuf": base64.b64encode(record.SerializeToString()).decode(),
        }


def build_redactor(settings: NormalizeSettings) -> Redactor | None:
    """None when nothing is redacted, so the hot path skips the redaction call entirely."""
    if not settings.redact:
        return None
    key = settings.hash_key.get_secret_value().encode() if settings.hash_key is not None else None
    return Redactor(settings.redact, key)
