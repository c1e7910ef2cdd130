"""Which records were already delivered, so the overlapping re-reads send few duplicates.

A key is kept for as long as its record may be listed again: until every time the API
might filter it on (for queries, the start ``timestamp`` or ``completed_at``) has fallen
behind the start of the next window.
"""

from __future__ import annotations

from collections.abc import Iterable


class DeliveredKeys:
    """Delivered keys (persisted with the checkpoint) plus keys in flight (memory only)."""

    def __init__(self, delivered: dict[str, int]) -> None:
        self._delivered = delivered  # shared with the StreamState that is checkpointed
        self._in_flight: set[str] = set()

    def __len__(self) -> int:
        return len(self._delivered)

    def was_delivered(self, key: str) -> bool:
        return key in self._delivered

    def claim(self, key: str) -> bool:
        """Put the record on its way to the sinks unless it is delivered or in flight;
        whether it was new.

        Once claimed, a second listing of the record is a duplicate. Checking and claiming
        in one call: it runs for every record listed.
        """
        if key in self._delivered or key in self._in_flight:
            return False
        self._in_flight.add(key)
        return True

    def in_flight(self, key: str) -> bool:
        """Claimed and not yet acknowledged (nor given back)."""
        return key in self._in_flight

    def any_in_flight(self, keys: Iterable[str]) -> bool:
        in_flight = self._in_flight
        return any(key in in_flight for key in keys)

    def release(self, key: str) -> None:
        """Give a claim back: the record was not handed over after all (a listing that
        failed part-way), so the next listing must take it again."""
        self._in_flight.discard(key)

    def acknowledge(self, keys: Iterable[tuple[str, int]]) -> None:
        for key, relist_until_ns in keys:
            self._in_flight.discard(key)
            previous = self._delivered.get(key, 0)
            self._delivered[key] = max(previous, relist_until_ns)

    def prune(self, relisted_from_ns: int) -> int:
        """Forget keys whose records can no longer appear in a listing starting here."""
        stale = [key for key, until in self._delivered.items() if until < relisted_from_ns]
        for key in stale:
            del self._delivered[key]
        return len(stale)
