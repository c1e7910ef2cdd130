"""Record timestamps: spread over a window, in same-time groups, at a chosen precision.

Real records carry nanoseconds; a daemon that keeps only microseconds (Python datetime)
loses the ordering of records inside one microsecond and may re-fetch or skip them. With
``ns`` precision no generated timestamp is a multiple of 1000 ns, so such a bug shows.
"""

from __future__ import annotations

import math
import random


def quantize(ns: int, quantum: int) -> int:
    """Truncate to the precision; at nanosecond precision, avoid whole microseconds."""
    if quantum > 1:
        return ns - ns % quantum
    return ns + 1 if ns % 1000 == 0 else ns


def spread(rng: random.Random, count: int, start_ns: int, end_ns: int, group: int, quantum: int) -> list[int]:
    """``count`` sorted timestamps in ``[start_ns, end_ns)``, ``group`` at a time sharing one."""
    if count <= 0:
        return []
    groups = math.ceil(count / group)
    span = max(1, end_ns - start_ns)  # a week of nanoseconds is far below 2**53: floats are exact enough
    draw = rng.random
    bases = sorted(quantize(start_ns + int(draw() * span), quantum) for _ in range(groups))
    if group == 1:
        return bases
    return [t for t in bases for _ in range(group)][:count]
