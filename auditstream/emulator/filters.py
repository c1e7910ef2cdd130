"""Parse the List ``filter`` string the way the SDKs and the CLI write it.

Grammar (as observed in the SDKs; the real server's is not documented):
``term ((" " | ",") term)*`` with ``term = field ":" value`` and ``value`` either a JSON
string (what the SDK's ``?`` placeholders produce) or a bare token. ``after``/``before``
take a time in any form a client might send: RFC 3339 (``Z`` or an offset, up to nine
fractional digits), ``YYYY-MM-DD``, or Python's ``str(datetime)``
(``2024-02-01 00:00:00+00:00``). Every other field is plain equality on the record's
(possibly dotted) field path, validated against the SDK's descriptor so a typo is an
INVALID_ARGUMENT rather than an empty listing.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from auditstream.emulator.options import Bound
from auditstream.sdm.registry import StreamSpec

NANOS = 1_000_000_000
TIME_FIELDS = ("after", "before")

_TIME = re.compile(
    r"""^(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})
        (?:[Tt ](?P<h>\d{2}):(?P<mi>\d{2})(?::(?P<s>\d{2})(?:\.(?P<frac>\d{1,9}))?)?
           \s*(?P<tz>[Zz]|[+-]\d{2}(?::?\d{2})?)?)?$""",
    re.VERBOSE,
)
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_DECODER = json.JSONDecoder()


class FilterError(ValueError):
    """The filter cannot be understood: the server answers INVALID_ARGUMENT."""


def parse_time_ns(text: str) -> int:
    """Nanoseconds since the epoch, keeping all nine fractional digits; naive means UTC."""
    match = _TIME.match(text.strip())
    if match is None:
        raise FilterError(f"cannot parse time {text!r}: use RFC 3339, e.g. 2024-01-01T00:00:00Z")
    g = match.groupdict()
    try:  # datetime validates the calendar (no Feb 30); timegm alone would normalise it
        moment = dt.datetime(
            int(g["y"]), int(g["mo"]), int(g["d"]), int(g["h"] or 0), int(g["mi"] or 0), int(g["s"] or 0)
        )
    except ValueError as exc:
        raise FilterError(f"cannot parse time {text!r}: {exc}") from None
    seconds = calendar.timegm(moment.timetuple())
    frac = g["frac"] or ""
    nanos = int(frac.ljust(9, "0")) if frac else 0
    offset = 0
    tz = g["tz"]
    if tz and tz not in ("Z", "z"):
        sign = -1 if tz[0] == "-" else 1
        digits = tz[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
        if hours > 23 or minutes > 59:
            raise FilterError(f"cannot parse time {text!r}: bad UTC offset")
        offset = sign * (hours * 3600 + minutes * 60)
    return (seconds - offset) * NANOS + nanos


@dataclass(frozen=True)
class Filter:
    """A parsed filter: optional time bounds plus equality terms, ANDed."""

    text: str = ""
    after_ns: int | None = None
    before_ns: int | None = None
    equals: tuple[tuple[str, str], ...] = ()

    def window(self, after_bound: Bound, before_bound: Bound) -> tuple[int | None, int | None]:
        """Inclusive ``[lo, hi]`` nanosecond bounds (None: unbounded) under the bound semantics."""
        lo = self.after_ns
        if lo is not None and after_bound is Bound.EXCLUSIVE:
            lo += 1
        hi = self.before_ns
        if hi is not None and before_bound is Bound.EXCLUSIVE:
            hi -= 1
        return lo, hi


def _tokens(text: str) -> list[tuple[str, str]]:
    terms: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while True:
        while i < n and (text[i].isspace() or text[i] == ","):
            i += 1
        if i >= n:
            return terms
        field = _FIELD.match(text, i)
        if field is None:
            raise FilterError(f"expected a field name at position {i} of filter {text!r}")
        i = field.end()
        while i < n and text[i].isspace():
            i += 1
        if i >= n or text[i] != ":":
            raise FilterError(f"expected ':' after {field.group()!r} in filter {text!r}")
        i += 1
        while i < n and text[i].isspace():
            i += 1
        if i < n and text[i] == '"':
            try:
                value, i = _DECODER.raw_decode(text, i)
            except json.JSONDecodeError as exc:
                raise FilterError(f"bad quoted value in filter {text!r}: {exc.msg}") from None
            if not isinstance(value, str):  # pragma: no cover - raw_decode at '"' yields str
                raise FilterError(f"bad quoted value in filter {text!r}")
        else:
            start = i
            while i < n and not text[i].isspace() and text[i] != ",":
                i += 1
            value = text[start:i]
            if not value:
                raise FilterError(f"missing value for {field.group()!r} in filter {text!r}")
        terms.append((field.group(), value))


def parse_filter(text: str) -> Filter:
    after = before = None
    equals: list[tuple[str, str]] = []
    for field, value in _tokens(text):
        if field in TIME_FIELDS:
            if (after if field == "after" else before) is not None:
                raise FilterError(f"{field!r} given twice in filter {text!r}")
            if field == "after":
                after = parse_time_ns(value)
            else:
                before = parse_time_ns(value)
        else:
            equals.append((field, value))
    return Filter(text=text, after_ns=after, before_ns=before, equals=tuple(equals))


def unknown_field(spec: StreamSpec, path: str) -> FilterError:
    """The refusal of a filter term on a field the stream does not have (INVALID_ARGUMENT)."""
    return FilterError(f"{spec.name} records cannot be filtered on {path!r}")


def replay_query_id(text: str) -> str:
    """The query id of a ``Replays.List`` filter, which must be exactly ``id:"<query id>"``.

    Replays are keyed by query, not by time: a missing id, a time bound or any other field
    is INVALID_ARGUMENT (the real API's answer to a missing id is not documented).
    """
    flt = parse_filter(text)
    if flt.after_ns is not None or flt.before_ns is not None:
        raise FilterError(f'replays cannot be filtered on time in filter {text!r}: use id:"<query id>"')
    if not flt.equals:
        raise FilterError('a query id is required: filter replays with id:"<query id>"')
    if len(flt.equals) > 1 or flt.equals[0][0] != "id" or not flt.equals[0][1]:
        raise FilterError(f'replays can only be filtered on one id:"<query id>", got {text!r}')
    return flt.equals[0][1]


def _field_getter(spec: StreamSpec, path: str) -> Callable[[Any], str]:
    descriptor = spec.record_class.DESCRIPTOR
    parts = path.split(".")
    for depth, part in enumerate(parts):
        field = descriptor.fields_by_name.get(part)
        if field is None or field.is_repeated:
            raise unknown_field(spec, path)
        last = depth == len(parts) - 1
        if last and field.message_type is not None:
            raise FilterError(f"{path!r} is not a plain value that a filter can compare")
        if not last:
            if field.message_type is None:
                raise unknown_field(spec, path)
            descriptor = field.message_type
    is_bool = field.type == field.TYPE_BOOL

    def get(record: Any) -> str:
        value: Any = record
        for part in parts:
            value = getattr(value, part)
        if is_bool:
            return "true" if value else "false"
        return str(value)

    return get


def record_predicate(flt: Filter, spec: StreamSpec) -> Callable[[bytes], bool] | None:
    """A check of the equality terms on serialized records, or None when there are none.

    Raises FilterError for a field the stream's records do not have.
    """
    if not flt.equals:
        return None
    checks = [(_field_getter(spec, path), value) for path, value in flt.equals]
    parse = spec.record_class.FromString

    def matches(payload: bytes) -> bool:
        record = parse(payload)
        return all(get(record) == value for get, value in checks)

    return matches
