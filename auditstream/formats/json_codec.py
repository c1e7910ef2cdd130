"""JSON encoding of events: one compact orjson document per event.

Callers frame it: file, syslog and NDJSON-over-HTTP sinks join lines with ``\\n`` (the
output has no raw newline: JSON escapes control characters inside strings), HEC wraps it in
its envelope. Events only hold str, int, bool, None, lists and str-keyed dicts (bytes are
base64 text already), so no ``default`` hook is needed and a foreign type fails loudly.
"""

from __future__ import annotations

import orjson

from auditstream.formats.events import Event


def encode_json(event: Event) -> bytes:
    """One event as compact JSON bytes, without a trailing newline."""
    return orjson.dumps(event)
