"""The one place where protobuf well-known values become event values.

Every converter (hand-written for the hot activity and query paths, descriptor-compiled for
history entities) goes through these helpers, so timestamps, durations, tags and bytes look
the same in every stream:

- ``google.protobuf.Timestamp`` -> RFC 3339 UTC with exactly nine fractional digits
  (``2024-01-01T00:00:00.123456789Z``); an unset (or all-zero) timestamp -> ``None``, which
  encodes as JSON ``null``: keys stay present so every event of a stream has the same shape.
- ``google.protobuf.Duration`` -> whole milliseconds (``int``, floor), as StrongDM's own Log
  Stream writes ``durationMs``; unset -> ``None``.
- ``v1.Tags`` -> ``{name: value}``.
- ``bytes`` -> standard base64 text (JSON has no bytes).

The hot paths read a Timestamp once per record and format it: formatting dominated the
profile, so the ``YYYY-MM-DDTHH:MM:SS.`` prefix is cached per second (records of one page are
close in time; a new second costs integer arithmetic on a per-day date cache, no datetime)
and tags are cached per serialized form (the same few tag sets repeat).
"""

from __future__ import annotations

import base64
import datetime as _dt
import re
from collections.abc import Callable
from operator import attrgetter
from typing import Any

from google.protobuf.message import Message

from auditstream.formats.cache import remember

NANOS_PER_SECOND = 1_000_000_000
NANOS_PER_MILLI = 1_000_000
_EPOCH = _dt.datetime(1970, 1, 1)

_seconds_nanos: Callable[[Any], tuple[int, int]] = attrgetter("seconds", "nanos")
_prefix_cache: dict[int, str] = {}  # epoch second -> "YYYY-MM-DDTHH:MM:SS."
_minute_cache: dict[int, str] = {}  # epoch minute -> "YYYY-MM-DDTHH:MM:"
_day_cache: dict[int, str] = {}  # epoch day -> "YYYY-MM-DDT"
_SECOND_TEXT = tuple(f"{second:02d}." for second in range(60))


def _minute_head(minute: int) -> str | None:
    """``YYYY-MM-DDTHH:MM:`` for an epoch minute, or None outside years 1..9999."""
    day, minute_of_day = divmod(minute, 1440)
    date = _day_cache.get(day)
    if date is None:
        try:
            moment = _EPOCH + _dt.timedelta(days=day)
        except OverflowError:
            return None
        date = remember(_day_cache, day, f"{moment.year:04d}-{moment:%m-%d}T")
    return remember(_minute_cache, minute, f"{date}{minute_of_day // 60:02d}:{minute_of_day % 60:02d}:")


def _second_prefix(seconds: int) -> str | None:
    """``YYYY-MM-DDTHH:MM:SS.`` for an epoch second, or None outside years 1..9999.

    Built from a per-minute cache (records listed in a backfill are often seconds apart,
    so the per-second cache misses while the minute repeats) with the date from a per-day
    cache: no datetime, no formatting per second. Second 0 is never cached, so a cached
    prefix implies a set timestamp (``timestamp``).
    """
    minute, second = divmod(seconds, 60)
    head = _minute_cache.get(minute) or _minute_head(minute)
    if head is None:
        return None
    prefix = head + _SECOND_TEXT[second]
    return remember(_prefix_cache, seconds, prefix) if seconds else prefix


def rfc3339(seconds: int, nanos: int) -> str:
    """Format epoch seconds + nanoseconds as RFC 3339 UTC with nine fractional digits.

    Out-of-range nanos are normalised. A moment outside years 1..9999 cannot be written in
    RFC 3339; it becomes ``invalid-timestamp:<seconds>s<nanos>ns`` so the value is kept and
    a malformed record never stops the stream.
    """
    if not 0 <= nanos < NANOS_PER_SECOND:
        extra, nanos = divmod(nanos, NANOS_PER_SECOND)
        seconds += extra
    prefix = _prefix_cache.get(seconds) or _second_prefix(seconds)
    if prefix is None:
        return f"invalid-timestamp:{seconds}s{nanos}ns"
    return f"{prefix}{str(NANOS_PER_SECOND + nanos)[1:]}Z"


def timestamp(ts: Message) -> str | None:
    """A ``google.protobuf.Timestamp`` as RFC 3339, None when unset (seconds and nanos 0)."""
    seconds, nanos = _seconds_nanos(ts)
    prefix = _prefix_cache.get(seconds)  # never holds second 0: a hit means "set"
    if prefix is not None and 0 <= nanos < NANOS_PER_SECOND:
        return f"{prefix}{str(NANOS_PER_SECOND + nanos)[1:]}Z"  # str(): cheaper than :09d
    if not (seconds or nanos):
        return None
    return rfc3339(seconds, nanos)


def duration_ms(duration: Message) -> int | None:
    """A ``google.protobuf.Duration`` in whole milliseconds (floor), None when unset."""
    seconds, nanos = _seconds_nanos(duration)
    if not (seconds or nanos):
        return None
    return seconds * 1000 + nanos // NANOS_PER_MILLI


_name_value: Callable[[Any], tuple[str, str]] = attrgetter("name", "value")
_tags_cache: dict[bytes, dict[str, str]] = {}


def tags(tag_set: Message) -> dict[str, str]:
    """``v1.Tags`` as a plain dict (a fresh copy: events may be changed by their owner)."""
    wire = tag_set.SerializeToString()
    cached = _tags_cache.get(wire)
    if cached is None:
        cached = remember(_tags_cache, wire, dict(map(_name_value, tag_set.pairs)))  # type: ignore[attr-defined]
    return dict(cached)


def b64(data: bytes) -> str:
    """Bytes as standard base64 text."""
    return base64.b64encode(data).decode("ascii")


_RFC3339 = re.compile(r"(\d{4}-\d{2}-\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})\Z")
_epoch_cache: dict[str, int] = {}


def epoch_ms(value: object) -> int | None:
    """Milliseconds since the epoch of an event timestamp string, None if it is not one.

    The CEF encoder works on event dicts (after redaction), so it reads times back from the
    strings this module wrote. Our own nine-digit form is answered from a cache of its
    ``YYYY-MM-DDTHH:MM:SS.`` prefix (one dict lookup); anything else is parsed.
    """
    if value is None:
        return None
    try:
        base = _epoch_cache[value[:20]]  # type: ignore[index]
    except (KeyError, TypeError):
        return _parse_epoch_ms(value)
    if len(value) == 30 and value[29] == "Z":  # type: ignore[arg-type,index]
        return base + int(value[20:23])  # type: ignore[index]
    return _parse_epoch_ms(value)


def _parse_epoch_ms(value: object) -> int | None:
    if not isinstance(value, str):
        return None
    match = _RFC3339.match(value)
    if match is None:
        return None
    day, hour, minute, second, fraction, zone = match.groups()
    try:
        moment = _dt.datetime.fromisoformat(
            f"{day}T{hour}:{minute}:{second}{'+00:00' if zone == 'Z' else zone}"
        )
    except ValueError:
        return None
    base_ms = int((moment - _EPOCH.replace(tzinfo=_dt.UTC)).total_seconds()) * 1000
    if zone == "Z" and len(value) == 30:
        remember(_epoch_cache, value[:20], base_ms)
    return base_ms + int((fraction or "0").ljust(3, "0")[:3])
