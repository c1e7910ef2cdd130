"""The one bounded cache of the formats' hot paths: a plain dict, emptied when full.

Verbs, addresses, seconds and rendered CEF groups repeat from record to record, so each is
worked out once (a cache stays only where the formats benchmark, counted in instructions,
shows it paying). Callers read with ``dict.get``, the cheapest hit there is (an
``functools.lru_cache`` hit costs more, its bookkeeping included), and store through
``remember``, which holds the one bound: emptying a full cache costs a few milliseconds of
refill, far less than evicting entry by entry. Hostile input costs a miss per record and at
most ``LIMIT`` entries per cache.
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
