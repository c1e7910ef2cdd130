"""One entry point for every generated record: the initial data set and live traffic."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from auditstream.emulator.data.activities import ActivityFactory
from auditstream.emulator.data.entities import EntityFiller
from auditstream.emulator.data.history import HistoryFactory
from auditstream.emulator.data.queries import QueryEncryption, QueryFactory
from auditstream.emulator.data.replays import ReplayBook
from auditstream.emulator.data.secret_logs import SecretLogFactory
from auditstream.emulator.data.secrets import SecretPlanter
from auditstream.emulator.data.timeline import spread
from auditstream.emulator.data.vocabulary import Vocabulary, build_vocabulary
from auditstream.emulator.options import EmulatorOptions, QueriesTime
from auditstream.emulator.store import Row
from auditstream.sdm.registry import STREAMS, StreamKind

if TYPE_CHECKING:
    from auditstream.emulator.logkey import LogKey

NANOS = 1_000_000_000
LONG_PAIR_RATE = 0.05  # of initial queries: a finished long session, two records


class DataFactory:
    """Builds records with the SDK's message classes from one seeded vocabulary."""

    def __init__(self, options: EmulatorOptions, now_ns: int, log_key: LogKey | None = None) -> None:
        """``log_key``: the organisation's key, required when ``encrypted_fraction`` > 0
        (``logkey.resolve_log_key``; the emulator resolves it once and keeps the private half)."""
        self.options = options
        self.quantum = options.time_precision.quantum_ns
        self.vocab: Vocabulary = build_vocabulary(options.seed, options.hostile)
        self.rng = random.Random(f"data:{options.seed}")
        # pools scale with the data set: a 200-record test emulator starts in milliseconds
        pool = max(64, min(options.records, 4096))
        self.activities = ActivityFactory(self.vocab, self.rng, pool)
        self.planter = SecretPlanter(options.secret_fraction, random.Random(f"secrets:{options.seed}"))
        encryption = None
        if options.encrypted_fraction > 0:
            if log_key is None:
                raise ValueError("encrypted_fraction > 0 needs the organisation's key (log_key)")
            from auditstream.emulator.crypto import QueryEncryptor

            encryptor = QueryEncryptor(log_key.public_key, random.Random(f"crypto:{options.seed}"))
            encryption = QueryEncryption(encryptor, log_key.key_id, options.encrypted_fraction)
        self.replays = ReplayBook(
            options.seed, self.planter, encryption.encryptor if encryption is not None else None
        )
        self.queries = QueryFactory(
            self.vocab,
            self.rng,
            self.quantum,
            pool // 2,
            planter=self.planter,
            book=self.replays,
            encryption=encryption,
        )
        self.secret_logs = SecretLogFactory(self.vocab, self.rng, max(64, min(options.history_count, 1024)))
        self._filler = EntityFiller(self.vocab, self.rng, now_ns)
        self._history: dict[str, HistoryFactory] = {}
        self.anchor_is_completion = options.queries_time is QueriesTime.COMPLETED

    def history(self, name: str) -> HistoryFactory:
        """The factory of one history stream, built on first use (26 entity pools add up)."""
        factory = self._history.get(name)
        if factory is None:
            factory = self._history[name] = HistoryFactory(STREAMS[name], self.vocab, self.rng, self._filler)
        return factory

    def initial_rows(self, name: str, now_ns: int) -> list[Row]:
        """The data set a stream starts with: spread over ``spread_seconds`` up to now."""
        spec = STREAMS[name]
        count = self.options.records
        if spec.kind is StreamKind.HISTORY or spec.kind is StreamKind.SECRET_LOG:
            count = self.options.history_count  # changes and secret reads are rarer than logins
        start = now_ns - int(self.options.spread_seconds * NANOS)
        times = spread(self.rng, count, start, now_ns, self.options.same_timestamp, self.quantum)
        if spec.kind is StreamKind.ACTIVITY:
            return self.activities.make_many(times)
        if spec.kind is StreamKind.SECRET_LOG:
            return self.secret_logs.make_many(times)
        rows: list[Row] = []
        i = 0
        if spec.kind is StreamKind.QUERY:
            while i < count:
                if i + 1 < count and self.rng.random() < LONG_PAIR_RATE:
                    pair = self.queries.long_pair(times[i], self.anchor_is_completion, now_ns)
                    rows.extend(pair)
                    i += len(pair)
                else:
                    rows.append(self.queries.short(times[i], self.anchor_is_completion, now_ns))
                    i += 1
            return rows
        history = self.history(name)
        while i < count:
            batch = history.activity(times[i], min(history.entity_count_draw(), count - i))
            rows.extend(batch)
            i += len(batch)
        return rows

    def live_rows(self, name: str, time_ns: int, now_ns: int) -> list[Row]:
        """Records of one new event in ``name`` (history events may touch several entities)."""
        spec = STREAMS[name]
        if spec.kind is StreamKind.ACTIVITY:
            return [self.activities.make(time_ns)]
        if spec.kind is StreamKind.SECRET_LOG:
            return [self.secret_logs.make(time_ns)]
        if spec.kind is StreamKind.QUERY:
            # a live query is listed once it completes: ``time_ns`` is its completion, so
            # under ``queries_time=start`` it lands a few seconds behind "now", as it would
            return [self.queries.short(time_ns, True, now_ns)]
        history = self.history(name)
        return history.activity(time_ns, history.entity_count_draw())
