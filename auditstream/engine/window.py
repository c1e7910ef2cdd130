"""Which time window a poll cycle lists.

Each cycle lists ``[watermark - overlap, min(now - settle, watermark + slice)]``: the overlap
re-reads the recent past (late records, bounds that may be exclusive, page boundaries inside
groups of equal timestamps), the optional settle margin (0 by default: the overlap already
re-reads the newest records, and a margin delays every record by its length) leaves them to
the next cycle, and the slice keeps a catch-up or backfill listing bounded.
"""

from __future__ import annotations

from dataclasses import dataclass

from auditstream.sdm.registry import NANOS_PER_SECOND


@dataclass(frozen=True)
class WindowPolicy:
    overlap_ns: int
    settle_ns: int
    slice_ns: int
    floor_ns: int | None = None  # backfill: never list before its --from
    end_ns: int | None = None  # backfill: stop here

    @classmethod
    def from_seconds(
        cls,
        overlap: float,
        settle: float,
        slice_: float,
        floor_ns: int | None = None,
        end_ns: int | None = None,
    ) -> WindowPolicy:
        return cls(
            overlap_ns=int(overlap * NANOS_PER_SECOND),
            settle_ns=int(settle * NANOS_PER_SECOND),
            slice_ns=max(int(slice_ * NANOS_PER_SECOND), NANOS_PER_SECOND),
            floor_ns=floor_ns,
            end_ns=end_ns,
        )


@dataclass(frozen=True)
class Window:
    start_ns: int  # what is listed from (watermark - overlap)
    end_ns: int  # what the watermark becomes once the window is delivered
    list_until_ns: int | None = None  # the listing's before bound when past end_ns (the live edge)

    @property
    def before_ns(self) -> int:
        return self.end_ns if self.list_until_ns is None else max(self.end_ns, self.list_until_ns)


def next_window(watermark_ns: int, now_ns: int, policy: WindowPolicy) -> Window | None:
    """The next window to list, or None when the watermark is already as far as it may go."""
    end = min(now_ns - policy.settle_ns, watermark_ns + policy.slice_ns)
    if policy.end_ns is not None:
        end = min(end, policy.end_ns)
    if end <= watermark_ns:
        return None
    start = watermark_ns - policy.overlap_ns
    if policy.floor_ns is not None:
        start = max(start, policy.floor_ns)
    return Window(start_ns=start, end_ns=end)


def is_finished(watermark_ns: int, policy: WindowPolicy) -> bool:
    return policy.end_ns is not None and watermark_ns >= policy.end_ns
