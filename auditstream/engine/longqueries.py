"""Deliver the completion record of every long-running query, whichever time the API filters on.

A long-running query (SSH, RDP, Kubernetes session) is listed twice with one id: a start
record with an empty ``completed_at``, then a completion record. If the Queries filter
applies to the start ``timestamp``, the completion record of a three-hour session is listed
three hours behind the cursor, where no overlap reaches. So the queries poller remembers
every open query (persisted with the checkpoint) and re-lists a short window around its
start time every ``long_query_recheck`` until the completion shows up or
``long_query_horizon`` passes. If the filter applies to ``completed_at``, the ordinary poll
delivers the completion first and the query simply leaves the open set.

Only queries that started before the stream's sweep mark are re-checked: ground after it is
listed once more by the sweep, once it is ``overlap`` old, and that listing finds the
completion of every session that ended by then. A session shorter than the overlap is
therefore never re-checked at all. (Re-checking every open session each minute re-read the
last few minutes of a busy Queries stream each minute: 4 listings per query where the design
is about 2.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import structlog

from auditstream.engine.checkpoint import OpenQuery, QueryChanges, StreamState
from auditstream.engine.dedupe import DeliveredKeys
from auditstream.engine.observer import EngineObserver, NullEngineObserver
from auditstream.engine.window import Window
from auditstream.sdm.registry import NANOS_PER_SECOND, query_is_open

log = structlog.get_logger("auditstream.longqueries")

# A completion record carries its query's start time; list a little around it in case the
# API rounds the filter bounds, and merge windows closer than the gap into one listing.
WINDOW_PAD_NS = 2 * NANOS_PER_SECOND
MERGE_GAP_NS = 60 * NANOS_PER_SECOND


class LongQueryTracker:
    def __init__(
        self,
        state: StreamState,
        recheck_interval: float,
        horizon: float,
        max_open: int,
        clock: Callable[[], int],
        observer: EngineObserver | None = None,
    ) -> None:
        self._observer: EngineObserver = observer or NullEngineObserver()
        self._state = state
        self._open = state.open_queries
        self.recheck_interval = recheck_interval
        self._horizon_ns = int(horizon * NANOS_PER_SECOND)
        self._max_open = max_open
        self._clock = clock
        self._cap_warned = False
        self.rounds = 0
        self._observer.long_queries_open(len(self._open))

    @property
    def open_ids(self) -> set[str]:
        return set(self._open)

    def after_delivery(self, records: Iterable[Any], keys: DeliveredKeys) -> QueryChanges:
        """Track starts and completions that the sinks have just acknowledged; what changed
        goes into the checkpoint with the batch."""
        opened: dict[str, OpenQuery] = {}
        closed: list[str] = []
        for record in records:
            query_id = str(record.id)
            if not query_is_open(record):
                if self._open.pop(query_id, None) is not None:
                    closed.append(query_id)
                    opened.pop(query_id, None)
                continue
            if query_id in self._open or keys.was_delivered(query_id):
                continue  # already tracked, or its completion is already delivered
            if len(self._open) >= self._max_open:
                self._observer.long_queries_expired("cap", 1)
                if not self._cap_warned:
                    log.warning(
                        "open long-running query cap reached; new sessions are not tracked for completion",
                        cap=self._max_open,
                        query_id=query_id,
                        hint="raise [streams] long_query_max_open",
                    )
                    self._cap_warned = True
                continue
            start_ns = record.timestamp.seconds * NANOS_PER_SECOND + record.timestamp.nanos
            self._open[query_id] = opened[query_id] = OpenQuery(
                start_ns=start_ns, first_seen_ns=self._clock()
            )
        if len(self._open) < self._max_open:
            self._cap_warned = False
        self.rounds = 0
        self._observer.long_queries_open(len(self._open))
        return QueryChanges(opened, closed)

    def expire(self, now_ns: int) -> list[str]:
        """Give up on queries open longer than the horizon, loudly."""
        expired = [qid for qid, q in self._open.items() if now_ns - q.start_ns > self._horizon_ns]
        for query_id in expired:
            started = self._open.pop(query_id).start_ns
            self._observer.long_queries_expired("horizon", 1)
            log.warning(
                "no completion record within long_query_horizon; no longer looking for it",
                query_id=query_id,
                started_ns=started,
                hint="raise [streams] long_query_horizon to wait longer",
            )
        self._observer.long_queries_open(len(self._open))
        return expired

    def recheck_windows(self) -> list[Window]:
        """Windows around the start times of the open queries the sweep has passed (module
        docstring), merged so nearby ones share a listing."""
        swept = self._state.final_ns
        windows: list[Window] = []
        for start in sorted(q.start_ns for q in self._open.values() if q.start_ns < swept):
            lo, hi = start - WINDOW_PAD_NS, start + WINDOW_PAD_NS
            if windows and lo <= windows[-1].end_ns + MERGE_GAP_NS:
                last = windows[-1]
                windows[-1] = Window(last.start_ns, max(last.end_ns, hi))
            else:
                windows.append(Window(lo, hi))
        return windows

    def completions_in(self, records: Iterable[Any], keys: DeliveredKeys) -> list[Any]:
        """From a re-check listing, only the completion records of queries still open.

        Everything else in that old window was delivered long ago and forgotten by dedupe;
        handing it on would be a flood of duplicates.
        """
        return [
            record
            for record in records
            if not query_is_open(record)
            and str(record.id) in self._open
            and not keys.was_delivered(str(record.id))
        ]

    def count_found(self, n: int) -> None:
        self._observer.long_queries_completed_by_recheck(n)

    def round_done(self) -> None:
        self.rounds += 1
        self._observer.long_query_recheck_round()
