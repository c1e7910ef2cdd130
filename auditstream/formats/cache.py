"""The one bounded cache of the formats' hot paths: a plain dict, emptied when full.

Verbs, addresses, timestamps' seconds and rendered CEF groups repeat from record to record,
so each is worked out once and looked up after that (each cache is kept because the formats
benchmark, counted in instructions, showed it paying; one that did not was removed). Callers
read with ``dict.get``, which
is the cheapest hit Python has (``functools.lru_cache`` cost more per hit in the formats
benchmark, its LRU bookkeeping included), and store through :func:`remember`, which holds the
one bound: a full cache is emptied rather than evicted entry by entry, because refilling
``LIMIT`` entries costs milliseconds while eviction bookkeeping would cost on every hit.
Hostile input (a new value on every record) therefore costs one miss per record and never
more than ``LIMIT`` entries of memory per cache.
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")

LIMIT = 4096


def remember(cache: dict[K, V], key: K, value: V) -> V:
    """Store ``value`` under ``key`` (emptying ``cache`` first when it holds ``LIMIT`` entries)."""
    if len(cache) >= LIMIT:
        cache.clear()
    cache[key] = value
    return value
