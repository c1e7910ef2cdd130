"""Record -> event, once per record: decrypted, masked and redacted before fan-out.

The order matters. An encrypted query is decrypted first (formats.decryption), so masking
sees the plaintext; masking (formats.masking) runs before redaction, so a field an operator
hashes is the hash of the masked value, never of a credential; and nothing of the record
reaches a sink by any other path, the fallback for a record that cannot be normalized
included.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Sequence
from typing import Any

import structlog
from google.protobuf import json_format

from auditstream.engine.observer import EngineObserver, NullEngineObserver
from auditstream.formats.decryption import QueryDecryptor, decrypt_query_event
from auditstream.formats.events import FORMAT_VERSION, Event, event_converter
from auditstream.formats.masking import MASKED_FIELD, Masker
from auditstream.formats.redaction import Redactor
from auditstream.formats.settings import NormalizeSettings
from auditstream.sdm.registry import StreamKind, StreamSpec

log = structlog.get_logger("auditstream.normalize")

DECRYPTION_FIELD = "decryption"  # set by formats.decryption on every encrypted query


class Normalizer:
    """Callable turning one protobuf record of one stream into the event every sink encodes."""

    def __init__(
        self,
        spec: StreamSpec,
        redactor: Redactor | None = None,
        *,
        keep_credentials: bool = False,
        observer: EngineObserver | None = None,
        masker: Masker | None = None,
        decryptor: QueryDecryptor | None = None,
    ) -> None:
        self._observer: EngineObserver = observer or NullEngineObserver()
        self._spec = spec
        self._redactor = redactor
        self._masker = masker
        self._decryptor = decryptor
        self._keep_credentials = keep_credentials
        self._queries = spec.kind in (StreamKind.QUERY, StreamKind.REPLAY)
        self._convert = event_converter(spec, keep_credentials=keep_credentials)

    @property
    def masker(self) -> Masker | None:
        return self._masker

    @property
    def decryptor(self) -> QueryDecryptor | None:
        return self._decryptor

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
        return self._protect(events)

    def __call__(self, record: Any) -> Event:
        try:
            event = self._convert(record)
        except Exception as exc:  # one odd record must neither stop the stream nor be lost
            event = self._fallback(record, exc)
        return self._protect([event])[0]

    def _protect(self, events: list[Event]) -> list[Event]:
        """Decrypt, mask, redact: each step only where it applies, counted."""
        if self._queries:
            outcomes: Counter[str] = Counter()
            for i, event in enumerate(events):
                if event.get("encrypted") is True:
                    event = events[i] = decrypt_query_event(
                        event, self._decryptor, keep_credentials=self._keep_credentials
                    )
                    outcomes[str(event.get(DECRYPTION_FIELD))] += 1
            for outcome, count in outcomes.items():
                self._observer.queries_decrypted(self._spec.name, outcome, count)
        masker = self._masker
        if masker is not None:
            masked = 0
            for i, event in enumerate(events):
                protected = masker.mask_event(event)
                if protected is not event:
                    events[i] = protected
                    masked += MASKED_FIELD in protected
            if masked:
                self._observer.secrets_masked(self._spec.name, masked)
        redactor = self._redactor
        if redactor is not None:
            events = [redactor.apply(event) for event in events]
        return events

    def _fallback(self, record: Any, exc: Exception) -> Event:
        """The record as the API sent it, flagged, so the SIEM still gets it.

        With masking on, the record goes out as JSON with every string masked, never as
        raw protobuf bytes (whose base64 would carry a credential past the masker).
        """
        spec = self._spec
        self._observer.normalization_failed(spec.name)
        key = spec.record_key(record)
        log.error("record could not be normalized; sent raw", stream=spec.name, key=key, error=repr(exc))
        event: Event = {
            "logType": spec.name,
            "formatVersion": FORMAT_VERSION,
            "id": key,
            "timestamp": None,
            "normalizationError": repr(exc),
        }
        if self._masker is None:
            event["rawProtobuf"] = base64.b64encode(record.SerializeToString()).decode()
            return event
        try:
            raw = json_format.MessageToDict(record, preserving_proto_field_name=False)
        except Exception:
            raw = None  # not even that: the key and the error are all that can go out safely
        event["rawRecord"] = _mask_strings(raw, self._masker)
        return event


def _mask_strings(value: Any, masker: Masker) -> Any:
    if isinstance(value, str):
        return masker.mask(value)[0]
    if isinstance(value, dict):
        return {key: _mask_strings(item, masker) for key, item in value.items()}
    if isinstance(value, list):
        return [_mask_strings(item, masker) for item in value]
    return value


def build_redactor(settings: NormalizeSettings) -> Redactor | None:
    """None when nothing is redacted, so the hot path skips the redaction call entirely."""
    if not settings.redact:
        return None
    key = settings.hash_key.get_secret_value().encode() if settings.hash_key is not None else None
    return Redactor(settings.redact, key)


def build_normalizer(
    spec: StreamSpec, settings: NormalizeSettings, observer: EngineObserver | None = None
) -> Normalizer:
    """The normalizer of one stream under ``[normalize]``."""
    return Normalizer(
        spec,
        build_redactor(settings),
        keep_credentials=settings.keep_credentials,
        observer=observer,
        masker=settings.masker(),
        decryptor=settings.decryptor(),
    )
