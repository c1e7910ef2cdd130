"""Live traffic: new records every second, late ones, and long sessions that close later.

Records become visible through the store (immediately, or scheduled for a future
``visible_at``: the completion of a long session). Pacing follows the event loop's clock,
catching up after a stall rather than drifting, so ``live`` records per second hold on
average whatever the tick jitter.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

from auditstream.emulator.data.factory import DataFactory
from auditstream.emulator.data.timeline import quantize
from auditstream.emulator.options import EmulatorOptions
from auditstream.emulator.store import Store
from auditstream.sdm.registry import STREAMS, StreamKind

NANOS = 1_000_000_000
TICK_SECONDS = 0.02
ACTIVITY_SHARE = 0.45
QUERY_SHARE = 0.45
SECRET_LOG_SHARE = 0.03  # ManagedSecrets.Logs; the rest goes to history streams


@dataclass
class _Group:
    time_ns: int = 0
    left: int = 0
    late: bool = False


@dataclass
class LiveStats:
    produced: int = 0
    late: int = 0
    sessions_opened: int = 0
    per_stream: dict[str, int] = field(default_factory=dict)


def schedule_open_sessions(
    store: Store, factory: DataFactory, options: EmulatorOptions, rng: random.Random, now_ns: int
) -> int:
    """``long_sessions`` sessions already open at start-up, closing within the window.

    Each start record (started minutes to hours ago) is visible at once; its completion
    record is scheduled to appear at its ``completed_at``.
    """
    low, high = options.long_session_age_seconds
    for _ in range(options.long_sessions):
        start = quantize(now_ns - int(rng.uniform(low, high) * NANOS), factory.quantum)
        session, start_row = factory.queries.open_session(start)
        store.add("queries", start_row)
        end = quantize(
            now_ns + int(rng.uniform(0.05, max(0.05, options.long_session_close_within)) * NANOS),
            factory.quantum,
        )
        store.add("queries", factory.queries.completion(session, end), visible_at_ns=end)
    return options.long_sessions


class LiveFeed:
    def __init__(self, store: Store, factory: DataFactory, options: EmulatorOptions) -> None:
        self.store = store
        self.factory = factory
        self.options = options
        self.rng = random.Random(f"live:{options.seed}")
        self.stats = LiveStats()
        enabled = set(options.streams)
        self._history = [n for n, s in STREAMS.items() if s.kind is StreamKind.HISTORY and n in enabled]
        self._groups: dict[str, _Group] = {}

    def _pick_stream(self) -> str | None:
        draw = self.rng.random()
        enabled = self.options.streams
        if draw < ACTIVITY_SHARE and "activities" in enabled:
            return "activities"
        if draw < ACTIVITY_SHARE + QUERY_SHARE and "queries" in enabled:
            return "queries"
        if draw < ACTIVITY_SHARE + QUERY_SHARE + SECRET_LOG_SHARE and "managed_secret_logs" in enabled:
            return "managed_secret_logs"
        if self._history:
            return self.rng.choice(self._history)
        return next((n for n in ("activities", "queries") if n in enabled), None)

    def _time_for(self, name: str, now_ns: int) -> int:
        """The new record's time: now, or up to ``late_max_seconds`` ago; groups share one."""
        group = self._groups.setdefault(name, _Group())
        if group.left <= 0:
            when = now_ns
            group.late = bool(self.options.late_rate) and self.rng.random() < self.options.late_rate
            if group.late:
                when -= int(self.rng.uniform(0, self.options.late_max_seconds) * NANOS)
            group.time_ns = quantize(when - self.rng.randrange(1000), self.factory.quantum)
            group.left = self.options.same_timestamp
        group.left -= 1
        if group.late:
            self.stats.late += 1
        return group.time_ns

    def produce_one(self, now_ns: int | None = None) -> int:
        """Add the records of one new event; returns how many records that was."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        name = self._pick_stream()
        if name is None:
            return 0
        when = self._time_for(name, now_ns)
        if name == "queries" and self.rng.random() < self.options.live_long_session_fraction:
            session, row = self.factory.queries.open_session(when)
            self.store.add(name, row)
            low, high = self.options.live_session_seconds
            end = now_ns + int(self.rng.uniform(low, high) * NANOS)
            self.store.add(name, self.factory.queries.completion(session, end), visible_at_ns=end)
            self.stats.sessions_opened += 1
            rows = 1
        else:
            batch = self.factory.live_rows(name, when, now_ns)
            for row in batch:
                self.store.add(name, row)
            rows = len(batch)
        self.stats.produced += rows
        self.stats.per_stream[name] = self.stats.per_stream.get(name, 0) + rows
        return rows

    async def run(self) -> None:
        """Produce ``live`` records per second until ``live_for`` seconds have passed."""
        rate = self.options.live
        if rate <= 0:
            return
        loop = asyncio.get_running_loop()
        started = loop.time()
        produced = 0
        while True:
            elapsed = loop.time() - started
            if self.options.live_for is not None and elapsed >= self.options.live_for:
                elapsed = self.options.live_for
            due = int(elapsed * rate) - produced
            while due > 0:
                made = max(1, self.produce_one())
                produced += made
                due -= made
            if self.options.live_for is not None and elapsed >= self.options.live_for:
                return
            await asyncio.sleep(TICK_SECONDS)
