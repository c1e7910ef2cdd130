"""Garbage-collector settings for a process that allocates a few containers per record.

Every record listed becomes an event dict with a list or two inside, alive from listing to
acknowledgement, i.e. across several of CPython's young collections (one every 700 net
container allocations by default, so several per page). Each collection traverses them
again, and every full collection also walks the whole start-up heap: modules, protobuf
descriptors, generated converters, none of which will ever be garbage.

So the start-up heap is frozen (``gc.freeze``: moved out of the collector's sight) and
young collections run every ``YOUNG_THRESHOLD`` allocations instead. Reference cycles are
still collected; what changes is how often the collector looks. Measured on a backfill of
activities: see BENCHMARKS.md ("Where the CPU goes").
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000


def tune_for_pipeline() -> None:
    """Call once, after start-up (imports, configuration) and before records flow."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
