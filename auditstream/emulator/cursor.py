"""The opaque pagination cursor: a frozen listing plan plus a keyset position.

Exactly-once pagination despite live inserts comes from two things carried here:

* ``snapshot``: the highest visibility seq when the first page was served. Later pages
  only return records with ``seq <= snapshot``, so a record visible at the start is listed
  once and a record that appears mid-listing is never half-listed;
* a keyset position ``(time_ns, seq)``: the last record examined, in traversal order.
  Inserts shift array indexes but never keyset positions.

A listing walks a sequence of *segments* (inclusive filter-time ranges, each ascending or
descending). ``oldest``/``newest`` have one segment. ``unordered`` cuts the window into
time buckets and visits them in a salted affine permutation, so consecutive pages jump
around in time while every record still belongs to exactly one bucket. The window and
bucket plan are frozen at the first page (the Activities default week would otherwise
slide under a listing).
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
import zlib
from dataclasses import dataclass

from auditstream.emulator.options import Order

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
VERSION = 1

_ORDERS = (Order.OLDEST, Order.NEWEST, Order.UNORDERED)
_LAYOUT = struct.Struct("<BIIqqqBIIqqIBqq")


class CursorError(ValueError):
    """A cursor this server did not issue for this stream and filter: INVALID_ARGUMENT."""


def tag(text: str) -> int:
    """A 32-bit fingerprint binding a cursor to its stream and filter text."""
    return zlib.crc32(text.encode())


@dataclass(frozen=True)
class Listing:
    """What stays fixed for all pages of one listing."""

    stream_tag: int
    filter_tag: int
    snapshot: int
    lo: int  # inclusive filter-time window
    hi: int
    order: Order
    salt: int = 0
    buckets: int = 1
    origin: int = 0
    width: int = 1

    @property
    def segment_count(self) -> int:
        return self.buckets if self.order is Order.UNORDERED else 1

    def segment(self, k: int) -> tuple[int, int, bool]:
        """``(lo, hi, descending)`` of the k-th segment in traversal order (may be empty)."""
        if self.order is not Order.UNORDERED:
            return self.lo, self.hi, self.order is Order.NEWEST
        b = (self._multiplier() * k + self.salt) % self.buckets
        lo = INT64_MIN if b == 0 else self.origin + b * self.width
        hi = INT64_MAX if b == self.buckets - 1 else self.origin + (b + 1) * self.width - 1
        descending = bool((self.salt >> (b % 31)) & 1)  # some buckets run backwards too
        return max(lo, self.lo), min(hi, self.hi), descending

    def _multiplier(self) -> int:
        n = self.buckets
        a = (self.salt >> 8) % n or 1
        while math.gcd(a, n) != 1:
            a += 1
        return a


@dataclass(frozen=True)
class Position:
    """Where the next page starts: after ``(time_ns, seq)`` in segment ``segment``."""

    segment: int = 0
    time_ns: int | None = None  # None: at the start of the segment
    seq: int = 0


def encode_cursor(listing: Listing, position: Position) -> str:
    body = _LAYOUT.pack(
        VERSION,
        listing.stream_tag,
        listing.filter_tag,
        listing.snapshot,
        listing.lo,
        listing.hi,
        _ORDERS.index(listing.order),
        listing.salt,
        listing.buckets,
        listing.origin,
        listing.width,
        position.segment,
        position.time_ns is not None,
        position.time_ns if position.time_ns is not None else 0,
        position.seq,
    )
    raw = body + struct.pack("<I", zlib.crc32(body))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str, *, stream_tag: int, filter_tag: int) -> tuple[Listing, Position]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise CursorError("the cursor is not one this server issued") from None
    if len(raw) != _LAYOUT.size + 4 or struct.unpack("<I", raw[-4:])[0] != zlib.crc32(raw[:-4]):
        raise CursorError("the cursor is not one this server issued")
    (
        version,
        s_tag,
        f_tag,
        snapshot,
        lo,
        hi,
        order,
        salt,
        buckets,
        origin,
        width,
        segment,
        has_pos,
        pos_time,
        seq,
    ) = _LAYOUT.unpack(raw[:-4])
    if version != VERSION or order >= len(_ORDERS) or buckets < 1 or width < 1:
        raise CursorError("the cursor is not one this server issued")
    if s_tag != stream_tag:
        raise CursorError("the cursor belongs to another service's listing")
    if f_tag != filter_tag:
        raise CursorError("the filter changed between pages of one listing")
    listing = Listing(s_tag, f_tag, snapshot, lo, hi, _ORDERS[order], salt, buckets, origin, width)
    return listing, Position(segment, pos_time if has_pos else None, seq)


# --- Replays.List: an offset into one session's chunks ------------------------------------

_OFFSET_LAYOUT = struct.Struct("<BIII")
OFFSET_VERSION = 2  # never a time listing's VERSION: neither kind of cursor decodes as the other


def encode_offset_cursor(stream_tag: int, filter_tag: int, offset: int) -> str:
    """A cursor for a listing that is a fixed sequence (a completed session's chunks)."""
    body = _OFFSET_LAYOUT.pack(OFFSET_VERSION, stream_tag, filter_tag, offset)
    raw = body + struct.pack("<I", zlib.crc32(body))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_offset_cursor(text: str, *, stream_tag: int, filter_tag: int) -> int:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise CursorError("the cursor is not one this server issued") from None
    if len(raw) != _OFFSET_LAYOUT.size + 4 or struct.unpack("<I", raw[-4:])[0] != zlib.crc32(raw[:-4]):
        raise CursorError("the cursor is not one this server issued")
    version, s_tag, f_tag, offset = _OFFSET_LAYOUT.unpack(raw[:-4])
    if version != OFFSET_VERSION:
        raise CursorError("the cursor is not one this server issued")
    if s_tag != stream_tag:
        raise CursorError("the cursor belongs to another service's listing")
    if f_tag != filter_tag:
        raise CursorError("the filter changed between pages of one listing")
    return int(offset)
