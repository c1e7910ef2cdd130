"""Record -> event, once per record, with the configured redaction applied before fan-out."""

from __future__ import annotations

from typing import Any

from auditstream.formats.events import Event, to_event
from auditstream.formats.redaction import Redactor
from auditstream.formats.settings import NormalizeSettings
from auditstream.sdm.registry import StreamSpec


class Normalizer:
    """Callable turning one protobuf record of one stream into the event every sink encodes."""

    def __init__(self, spec: StreamSpec, redactor: Redactor | None = None) -> None:
        self._spec = spec
        self._redactor = redactor

    def __call__(self, record: Any) -> Event:
        event = to_event(self._spec, record)
        if self._redactor is not None:
            event = self._redactor.apply(event)
        return event


def build_redactor(settings: NormalizeSettings) -> Redactor | None:
    """None when nothing is redacted, so the hot path skips the redaction call entirely."""
    if not settings.redact:
        return None
    key = settings.hash_key.get_secret_value().encode() if settings.hash_key is not None else None
    return Redactor(settings.redact, key)
