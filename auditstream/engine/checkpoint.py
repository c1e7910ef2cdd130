"""Durable per-stream progress in an embedded transactional store (SQLite, WAL).

What is kept, per stream: the watermark (everything before it has been delivered), the
sweep mark (everything before it is final: late arrivals included, see engine.window), the
keys delivered recently enough that a listing may return them again, and the long-running
queries whose completion is still awaited.

Acknowledged batches are committed together (group commit): at most every ``[checkpoint]
commit_interval`` (1 s by default) one transaction appends the keys of every batch acknowledged
since the last one, moves the marks of every window completed since, and prunes keys by an
indexed time. The cost of a save follows what was delivered, not the state (the JSON file this
replaces was rewritten whole, 2.7 MB after three minutes at 300 records/s), and no longer each
batch: a transaction per batch of 50 wrote 380 bytes per record at 1,000 records/s, mostly
pages rewritten for a few bytes of change; grouped, 54-64 (bench/bench_api.py, live). This is
Kafka's auto-commit trade at a fifth of its default interval: a crash re-sends what was
acknowledged since the last group commit (about an interval's worth) and loses nothing. Work is
committed in the order it was handed in, so a window's marks are never on disk before the keys
of its batches. The shutdown save and :meth:`CheckpointStore.close` commit what is pending; an
interval of 0 commits each batch on its own before the call returns.

A transaction is atomic, so every state on disk is one that existed; ``synchronous = NORMAL``
in WAL mode survives a crash of the process, and a power loss can only take the last commits
back, which re-delivers them (duplicates, never loss, since progress is always committed after
delivery).

The file is created 0600 (SQLite gives its ``-wal`` and ``-shm`` files the same mode) in a
directory created 0700. A consistent copy goes to ``<file>.bak`` at every start, every ten
minutes and at a clean stop: a corrupt store stops the daemon with a message naming both. A JSON
checkpoint from an earlier version (at the path, or at the same name ending in ``.json``) is
read once and migrated; it is kept as ``<json>.migrated``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from auditstream.engine.observer import EngineObserver, NullEngineObserver
from auditstream.fsutil import (
    PRIVATE_FILE_MODE,
    NotWritable,
    check_directory_writable,
    ensure_directory,
    fsync_directory,
)

SCHEMA_VERSION = 2
BACKUP_EVERY = 600.0
KEYS_PER_ROW = 1000
JSON_SCHEMA_VERSION = 1
FILE_MODE = PRIVATE_FILE_MODE
PAGE_SIZE = 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS streams (
    name TEXT PRIMARY KEY,
    watermark_ns INTEGER NOT NULL,
    swept_ns INTEGER NOT NULL,
    end_ns INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS delivered (
    stream TEXT NOT NULL,
    relist_until_ns INTEGER NOT NULL,
    keys BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS delivered_by_until ON delivered (relist_until_ns);
DROP INDEX IF EXISTS delivered_by_time;
CREATE TABLE IF NOT EXISTS open_queries (
    stream TEXT NOT NULL,
    query_id TEXT NOT NULL,
    start_ns INTEGER NOT NULL,
    first_seen_ns INTEGER NOT NULL,
    PRIMARY KEY (stream, query_id)
) WITHOUT ROWID;
"""
# ``delivered`` holds one row per stream and group commit (of up to KEYS_PER_ROW keys): the
# keys (a compressed JSON array: identifiers are hex, so about half the bytes) and the latest
# time any of them may be listed again. A group's keys then land in a few consecutive pages,
# and pruning deletes whole rows: one key per row, with an index per key, made every commit
# rewrite scattered B-tree pages (hundreds of bytes per record). The index is by time alone:
# its new entries all go to its last page, where one by (stream, time) (``delivered_by_time``,
# dropped) put each stream's in a page of its own, a page rewritten per stream and commit.
# Lookups happen in memory; the table is read once, at start, each key kept until its row's
# time.


class CheckpointError(Exception):
    """The checkpoint cannot be read or written; the message names the file and the way out."""


@dataclass
class OpenQuery:
    """A long-running query whose completion record has not been delivered yet."""

    start_ns: int
    first_seen_ns: int


@dataclass
class StreamState:
    watermark_ns: int  # every record before it has been delivered (when it was listed)
    delivered: dict[str, int] = field(default_factory=dict)  # key -> may be relisted until (ns)
    open_queries: dict[str, OpenQuery] = field(default_factory=dict)
    end_ns: int | None = None  # backfills remember where they stop, so a resume keeps it
    swept_ns: int | None = None  # everything before it is final, late records included

    def __post_init__(self) -> None:
        if self.swept_ns is None:
            self.swept_ns = self.watermark_ns

    @property
    def final_ns(self) -> int:
        """Where a listing must start again for nothing to be missed (the sweep mark)."""
        assert self.swept_ns is not None
        return self.swept_ns


@dataclass(frozen=True)
class QueryChanges:
    """Open long-running queries that appeared or were settled since the last commit."""

    opened: Mapping[str, OpenQuery] = field(default_factory=dict)
    closed: Iterable[str] = ()


def _restore_command(path: Path) -> str:
    """The backup restored, without the store's own WAL: SQLite would replay a WAL left by a
    crash onto the restored file, mixing the two states."""
    return f"`rm -f {path}-wal {path}-shm && cp {path}.bak {path}`"


def _recovery_hint(path: Path) -> str:
    return (
        f"restore the copy taken at every start, every {BACKUP_EVERY / 60:.0f} minutes and at a clean stop "
        f"with {_restore_command(path)} (records delivered since it was taken are sent again), or move "
        f"{path} away to start every stream over at [streams] start_at (records may be sent again or skipped)"
    )


def _stream_hint(path: Path, stream: str) -> str:
    return (
        f"restore {_restore_command(path)}, or start just this stream over with "
        f"`auditstream run --config FILE --reset-checkpoint {stream}`"
    )


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One atomic transaction (the connection is in autocommit mode, so ``with db`` alone
    would commit every statement on its own)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


class _Group:
    """The delivered keys of one group commit, held per stream and written at its end.

    The batches of one group then share rows of up to :data:`KEYS_PER_ROW` keys: fuller
    pages, fewer rows and index entries than a row per batch. Keys are sorted by time
    before they are cut into rows, so a row's time (its latest key's) keeps the others
    little longer than their own."""

    def __init__(self) -> None:
        self.keys: dict[str, list[tuple[str, int]]] = {}

    def add(self, stream: str, acks: Sequence[tuple[str, int]]) -> None:
        self.keys.setdefault(stream, []).extend(acks)

    def prune(self, stream: str, before_ns: int) -> None:
        """What a window's pruning would have deleted, had the keys been written before it."""
        held = self.keys.get(stream)
        if held:
            self.keys[stream] = [ack for ack in held if ack[1] >= before_ns]


_Work = Callable[[sqlite3.Connection, _Group], None]
"""One commit's statements, run in order with the rest of its group, in one transaction."""


def _is_json(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(1) == b"{"
    except OSError:
        return False


def _json_states(path: Path) -> tuple[dict[str, StreamState], int | None]:
    """A checkpoint written by auditstream 0.1 (one JSON document), as states."""
    try:
        document = orjson.loads(path.read_bytes())
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        version = document.get("schema_version")
        if version != JSON_SCHEMA_VERSION:
            raise ValueError(f"schema_version {version!r}, this auditstream reads {JSON_SCHEMA_VERSION}")
        streams = document["streams"]
        if not isinstance(streams, dict):
            raise ValueError("'streams' is not an object")
        newest = document.get("newest_record_ns")
        states = {}
        for name, data in streams.items():
            watermark = int(data["watermark_ns"])
            states[str(name)] = StreamState(
                watermark_ns=watermark,
                delivered={str(k): int(v) for k, v in dict(data.get("delivered", {})).items()},
                open_queries={
                    str(qid): OpenQuery(int(q["start_ns"]), int(q["first_seen_ns"]))
                    for qid, q in dict(data.get("open_queries", {})).items()
                },
                end_ns=int(data["end_ns"]) if data.get("end_ns") is not None else None,
                swept_ns=None,
            )
        return states, int(newest) if newest is not None else None
    except (OSError, orjson.JSONDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(
            f"checkpoint {path} (JSON, to migrate) is corrupt ({exc!r}); {_recovery_hint(path)}"
        ) from None


class CheckpointStore:
    """Every stream's progress in one SQLite file; batches and windows committed in groups.

    Beside the streams it keeps the newest record time any listing returned: a time the API's
    clock had certainly reached, which is where a watermark found in the future (written while
    the host clock ran ahead) can safely be pulled back to.
    """

    def __init__(
        self,
        path: Path,
        newest_record_ns: Callable[[], int | None] = lambda: None,
        observer: EngineObserver | None = None,
        json_overlap_ns: int = 0,
        commit_interval: float = 0.0,
    ) -> None:
        self.path = path
        self.backup = path.with_name(path.name + ".bak")
        self._newest_record_ns = newest_record_ns
        self._observer: EngineObserver = observer or NullEngineObserver()
        # A migrated JSON watermark was only final up to ``watermark - overlap``: its daemon
        # re-read the overlap at every poll.
        self._json_overlap_ns = json_overlap_ns
        self.loaded_newest_record_ns: int | None = None
        self._db: sqlite3.Connection | None = None
        # Acknowledged batches and completed windows are committed together, at most every
        # ``commit_interval`` seconds (0: each on its own, before the call returns).
        self._commit_interval = commit_interval
        self._pending: list[_Work] = []
        self._committer: asyncio.Task[None] | None = None
        self._failure: CheckpointError | None = None
        self._lock = asyncio.Lock()  # one writer at a time, in the order they came
        self._db_lock = threading.RLock()  # the connection, between worker threads and close()

    # -- opening -------------------------------------------------------------------------

    def _connect(self, path: Path) -> sqlite3.Connection:
        if not path.exists():
            ensure_directory(path.parent)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
        os.chmod(path, FILE_MODE)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        # A batch's transaction touches a few small rows, and the WAL writes whole pages: at
        # 1 KiB instead of the default 4 KiB, a checkpoint write costs about a quarter of the
        # bytes (BENCHMARKS.md). Only a new file takes it; an existing one keeps its own.
        db.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = OFF")
        return db

    def _open(self) -> sqlite3.Connection:
        """The connection, creating or migrating the file on first use."""
        if self._db is not None:
            return self._db
        legacy = self._legacy_json()
        if not self.path.exists() and legacy is None and self.backup.exists():
            raise CheckpointError(
                f"checkpoint {self.path} is missing but {self.backup} exists; {_recovery_hint(self.path)}"
            )
        try:
            db = self._connect(self.path) if legacy is None else self._migrate(legacy)
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                db.close()
                raise CheckpointError(
                    f"checkpoint {self.path} has schema {version}, this auditstream reads {SCHEMA_VERSION}; "
                    "run the auditstream version that wrote it, or " + _recovery_hint(self.path)
                )
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                db.close()
                raise sqlite3.DatabaseError("quick_check failed")
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise CheckpointError(
                f"checkpoint {self.path} is corrupt ({exc}); {_recovery_hint(self.path)}"
            ) from None
        except OSError as exc:
            raise CheckpointError(
                f"cannot open checkpoint {self.path}: {exc.strerror or exc}; {_recovery_hint(self.path)}"
            ) from None
        self._db = db
        return db

    def _legacy_json(self) -> Path | None:
        """A JSON checkpoint of auditstream 0.1 to migrate: at the path itself, or at the
        same name ending in ``.json`` (the old default) when the path is new."""
        if self.path.exists():
            return self.path if _is_json(self.path) else None
        sibling = self.path.with_suffix(".json")
        if sibling != self.path and sibling.exists() and _is_json(sibling):
            return sibling
        return None

    def _migrate(self, source: Path) -> sqlite3.Connection:
        """Write the JSON checkpoint's states into a new store, then swap it in: a crash at
        any point leaves either the JSON file where it was (migrated again at the next start,
        whatever a crashed attempt left beside it) or the store.

        At the path itself, the JSON is linked to ``<json>.migrated`` first (through a
        temporary name, so a link left by a crashed attempt is simply replaced), then the
        store replaces it. Beside the path, the store is moved in first and the JSON renamed
        after: the other way round, a crash between the two left neither, and the next start
        began every stream over at ``start_at``."""
        states, newest = _json_states(source)
        for state in states.values():
            state.swept_ns = state.watermark_ns - self._json_overlap_ns
        temporary = self.path.with_name(f".{self.path.name}.migrating")
        kept = source.with_name(source.name + ".migrated")
        linked = kept.with_name(f".{kept.name}.tmp")
        for leftover in (temporary, *(temporary.with_name(temporary.name + s) for s in ("-wal", "-shm"))):
            leftover.unlink(missing_ok=True)
        linked.unlink(missing_ok=True)
        db = self._connect(temporary)
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        with _transaction(db):
            self._replace_all(db, states, newest)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
        # Each step is made durable before the next (a power loss must not keep the later one).
        if source == self.path:
            os.link(source, linked)
            os.replace(linked, kept)
            fsync_directory(self.path.parent)
            os.replace(temporary, self.path)
        else:
            os.replace(temporary, self.path)
            fsync_directory(self.path.parent)
            os.replace(source, kept)
        fsync_directory(self.path.parent)
        return self._connect(self.path)

    # -- reading -------------------------------------------------------------------------

    def load(self, reset: frozenset[str] = frozenset()) -> dict[str, StreamState]:
        """Every stream's state; an absent file (and no backup) means a first start.

        Streams named in ``reset`` are dropped from the store, whatever their saved state.
        """
        if not self.path.exists() and self._legacy_json() is None:
            if self.backup.exists():
                raise CheckpointError(
                    f"checkpoint {self.path} is missing but {self.backup} exists; {_recovery_hint(self.path)}"
                )
            return {}
        db = self._open()
        try:
            if reset:
                self._forget(db, reset)
            states = self._read(db)
            row = db.execute("SELECT value FROM meta WHERE name = 'newest_record_ns'").fetchone()
            self.loaded_newest_record_ns = int(row[0]) if row and row[0] is not None else None
        except sqlite3.DatabaseError as exc:
            raise CheckpointError(
                f"checkpoint {self.path} is corrupt ({exc}); {_recovery_hint(self.path)}"
            ) from None
        return states

    def _read(self, db: sqlite3.Connection) -> dict[str, StreamState]:
        states: dict[str, StreamState] = {}
        for name, watermark, swept, end in db.execute(
            "SELECT name, watermark_ns, swept_ns, end_ns FROM streams"
        ):
            try:
                states[name] = StreamState(
                    watermark_ns=int(watermark), end_ns=None if end is None else int(end), swept_ns=int(swept)
                )
            except (TypeError, ValueError) as exc:
                raise CheckpointError(
                    f"checkpoint {self.path}: the state of stream {name} is corrupt ({exc!r}); "
                    f"{_stream_hint(self.path, name)}"
                ) from None
        for stream, until, keys in db.execute("SELECT stream, relist_until_ns, keys FROM delivered"):
            state = states.get(stream)
            if state is None:
                continue
            relist_until, row = self._delivered_row(stream, until, keys)
            for key in row:
                state.delivered[key] = max(state.delivered.get(key, 0), relist_until)
        for stream, query_id, start, first_seen in db.execute(
            "SELECT stream, query_id, start_ns, first_seen_ns FROM open_queries"
        ):
            if stream in states:
                states[stream].open_queries[query_id] = OpenQuery(int(start), int(first_seen))
        return states

    def _delivered_row(self, stream: str, until: object, blob: object) -> tuple[int, list[str]]:
        """A row's time and keys; a row that does not decode stops the start (one line, exit 2)
        as any other corrupt checkpoint does, rather than escape as a zlib or JSON traceback."""
        try:
            if not isinstance(until, int):
                raise TypeError(f"time {until!r} is not an integer")
            if not isinstance(blob, bytes):
                raise TypeError(f"a {type(blob).__name__}, not a compressed blob")
            keys = orjson.loads(zlib.decompress(blob))
            if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
                raise TypeError("not a list of keys")
        except (zlib.error, orjson.JSONDecodeError, TypeError) as exc:
            raise CheckpointError(
                f"checkpoint {self.path}: the delivered keys of stream {stream} are corrupt ({exc}); "
                f"{_recovery_hint(self.path)}"
            ) from None
        return until, keys

    def check_writable(self) -> None:
        """Fail at start-up, not after the first delivered batch, when state cannot be kept."""
        try:
            check_directory_writable(self.path.parent)
        except NotWritable as exc:
            raise CheckpointError(
                f"{exc}; fix its permissions or set [checkpoint] path to a writable, persistent location"
            ) from None

    def take_backup(self) -> None:
        """A consistent copy of the store as ``<file>.bak`` (0600), replaced atomically.

        Taken at every start, every :data:`BACKUP_EVERY` seconds and at a clean stop, so
        restoring it re-sends at most that much (never loses: it is an older state)."""
        with self._db_lock:
            self._copy_to_backup()

    def _copy_to_backup(self) -> None:
        db = self._open()
        temporary = self.backup.with_name(f".{self.backup.name}.tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            os.close(fd)
            target = sqlite3.connect(temporary)
            try:
                db.backup(target)
            finally:
                target.close()
            os.replace(temporary, self.backup)
            fsync_directory(self.path.parent)
        except (OSError, sqlite3.Error) as exc:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise self._write_error(exc) from None

    # -- writing -------------------------------------------------------------------------

    def _write_error(self, exc: Exception) -> CheckpointError:
        reason = getattr(exc, "strerror", None) or str(exc)
        return CheckpointError(
            f"cannot write checkpoint {self.path}: {reason}; fix the directory (space, permissions) and "
            "restart: records delivered since the last successful save will be sent again, none are lost"
        )

    def _newest(self) -> int | None:
        known = (self._newest_record_ns(), self.loaded_newest_record_ns)
        return max((t for t in known if t is not None), default=None)

    @staticmethod
    def _forget(db: sqlite3.Connection, streams: Iterable[str]) -> None:
        with _transaction(db):
            for table, column in (("streams", "name"), ("delivered", "stream"), ("open_queries", "stream")):
                db.executemany(f"DELETE FROM {table} WHERE {column} = ?", [(s,) for s in streams])

    @staticmethod
    def _append_keys(db: sqlite3.Connection, stream: str, acks: Sequence[tuple[str, int]]) -> None:
        """Rows of at most :data:`KEYS_PER_ROW` keys, each with the latest time of its keys."""
        for first in range(0, len(acks), KEYS_PER_ROW):
            chunk = acks[first : first + KEYS_PER_ROW]
            db.execute(
                "INSERT INTO delivered (stream, relist_until_ns, keys) VALUES (?, ?, ?)",
                (
                    stream,
                    max(until for _, until in chunk),
                    zlib.compress(orjson.dumps([k for k, _ in chunk]), 1),
                ),
            )

    @staticmethod
    def _put_stream(db: sqlite3.Connection, name: str, state: StreamState) -> None:
        db.execute(
            "INSERT OR REPLACE INTO streams (name, watermark_ns, swept_ns, end_ns) VALUES (?, ?, ?, ?)",
            (name, state.watermark_ns, state.final_ns, state.end_ns),
        )

    def _replace_all(
        self, db: sqlite3.Connection, states: Mapping[str, StreamState], newest: int | None
    ) -> None:
        """Everything replaced by ``states`` (inside the caller's transaction)."""
        db.execute("DELETE FROM delivered")
        db.execute("DELETE FROM open_queries")
        for name, state in states.items():
            self._put_stream(db, name, state)
            self._append_keys(db, name, sorted(state.delivered.items(), key=lambda pair: pair[1]))
            db.executemany(
                "INSERT INTO open_queries VALUES (?, ?, ?, ?)",
                [(name, qid, q.start_ns, q.first_seen_ns) for qid, q in state.open_queries.items()],
            )
        if newest is not None:
            db.execute("INSERT OR REPLACE INTO meta VALUES ('newest_record_ns', ?)", (newest,))

    # -- group commit --------------------------------------------------------------------

    def _apply(self, work: Sequence[_Work]) -> None:
        """``work`` in order, in one transaction (in a worker thread, or from close())."""
        with self._db_lock:
            db = self._open()
            group = _Group()
            try:
                with _transaction(db):
                    for step in work:
                        step(db, group)
                    for stream, acks in group.keys.items():
                        self._append_keys(db, stream, sorted(acks, key=lambda ack: ack[1]))
            except (OSError, sqlite3.Error) as exc:
                raise self._write_error(exc) from None

    async def _in_thread(self, call: Callable[[], None], *, commits: bool) -> None:
        """``call`` in a worker thread; the caller holds :attr:`_lock`.

        Cancelling the caller cannot stop the thread: it would go on inside its transaction
        while the lock let the next writer (the shutdown save) start one on the same
        connection ("cannot start a transaction within a transaction"). So the thread is
        waited for, and the cancellation is raised only once it is out; a group it failed
        to commit (``commits``) is remembered as if the caller had seen it fail.
        """
        worker = asyncio.ensure_future(asyncio.to_thread(call))
        try:
            await asyncio.shield(worker)
        except asyncio.CancelledError:
            while not worker.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait({worker})
            failure = None if worker.cancelled() else worker.exception()
            if commits:
                self._failed(failure)
            raise

    def _failed(self, exc: BaseException | None) -> None:
        """A write failed: what it held is not durable, so nothing after it may be either
        (a window's marks without its batches' keys). Every later write raises this."""
        if self._failure is None and isinstance(exc, Exception):
            self._failure = exc if isinstance(exc, CheckpointError) else self._write_error(exc)

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise CheckpointError(str(self._failure))

    async def flush(self) -> None:
        """Commit everything pending, in the order it was handed in, in one transaction."""
        async with self._lock:
            self._raise_if_failed()
            if not self._pending:
                return
            work, self._pending = self._pending, []
            try:
                await self._in_thread(lambda: self._apply(work), commits=True)
            except Exception as exc:
                self._failed(exc)
                raise
        self._observer.checkpoint_written()

    async def _submit(self, work: _Work, *, wait: bool) -> None:
        """Queue ``work`` behind everything handed in before it.

        ``wait`` (and a ``commit_interval`` of 0): return once it is durable. Otherwise
        return at once; the group is committed within ``commit_interval``, and a failure is
        raised by the next call (a kill meanwhile re-sends what was pending, loses nothing:
        it was delivered, and its keys and marks are simply not yet on disk).
        """
        self._raise_if_failed()
        self._pending.append(work)
        if wait or self._commit_interval <= 0:
            await self.flush()
        elif self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_later(), name="checkpoint-group-commit")

    async def _commit_later(self) -> None:
        """While work is pending, commit it every ``commit_interval`` seconds (a timer, not
        a wait for another task: the interval is what a crash may re-send)."""
        while self._pending:
            await asyncio.sleep(self._commit_interval)
            try:
                await self.flush()
            except Exception:
                return  # kept in _failure: the next commit, save or flush raises it

    async def back_up(self) -> None:
        """:meth:`take_backup` between transactions, off the event loop."""
        async with self._lock:
            await self._in_thread(self.take_backup, commits=False)

    async def save(self, states: Mapping[str, StreamState]) -> None:
        """Write every state whole (a first start, a reset, the shutdown save); streams and
        open queries only: delivered keys go in with their batches (:meth:`commit_batch`).

        Whatever is pending is committed first, in the same transaction: the marks written
        here may rest on batches acknowledged since the last group commit."""
        newest = self._newest()
        snapshot = {
            name: StreamState(s.watermark_ns, {}, dict(s.open_queries), s.end_ns, s.swept_ns)
            for name, s in states.items()
        }

        def work(db: sqlite3.Connection, group: _Group) -> None:
            for name, state in snapshot.items():
                self._put_stream(db, name, state)
                db.execute("DELETE FROM open_queries WHERE stream = ?", (name,))
                db.executemany(
                    "INSERT INTO open_queries VALUES (?, ?, ?, ?)",
                    [(name, qid, q.start_ns, q.first_seen_ns) for qid, q in state.open_queries.items()],
                )
            if newest is not None:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('newest_record_ns', ?)", (newest,))

        await self._submit(work, wait=True)

    async def save_all(self, states: Mapping[str, StreamState]) -> None:
        """Replace everything with ``states``, delivered keys included."""
        newest = self._newest()
        snapshot = {
            name: StreamState(s.watermark_ns, dict(s.delivered), dict(s.open_queries), s.end_ns, s.swept_ns)
            for name, s in states.items()
        }

        def work(db: sqlite3.Connection, group: _Group) -> None:
            group.keys.clear()  # replaced, as the DELETE would replace them had they been written
            self._replace_all(db, snapshot, newest)

        await self._submit(work, wait=True)

    async def commit_batch(
        self, stream: str, acks: Iterable[tuple[str, int]], queries: QueryChanges | None = None
    ) -> None:
        """One acknowledged batch: its keys appended, the open queries it changed (committed
        with the next group, see :meth:`_submit`)."""
        rows = list(acks)
        opened = [
            (stream, qid, q.start_ns, q.first_seen_ns)
            for qid, q in (queries.opened if queries else {}).items()
        ]
        closed = [(stream, qid) for qid in (queries.closed if queries else ())]

        def work(db: sqlite3.Connection, group: _Group) -> None:
            group.add(stream, rows)
            if closed:
                db.executemany("DELETE FROM open_queries WHERE stream = ? AND query_id = ?", closed)
            if opened:
                db.executemany("INSERT OR REPLACE INTO open_queries VALUES (?, ?, ?, ?)", opened)

        await self._submit(work, wait=False)

    async def commit_progress(
        self, stream: str, state: StreamState, prune_before_ns: int, expired: Iterable[str] = ()
    ) -> None:
        """A completed window: the stream's marks, keys no listing can return again dropped,
        open queries given up on removed.

        Queued behind the window's batches, so it is committed with them or after them, never
        before: marks on disk always rest on keys on disk."""
        snapshot = StreamState(state.watermark_ns, {}, {}, state.end_ns, state.swept_ns)
        newest = self._newest()
        gone = [(stream, qid) for qid in expired]

        def work(db: sqlite3.Connection, group: _Group) -> None:
            self._put_stream(db, stream, snapshot)
            db.execute(
                "DELETE FROM delivered WHERE stream = ? AND relist_until_ns < ?",
                (stream, prune_before_ns),
            )
            group.prune(stream, prune_before_ns)
            if gone:
                db.executemany("DELETE FROM open_queries WHERE stream = ? AND query_id = ?", gone)
            if newest is not None:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('newest_record_ns', ?)", (newest,))

        await self._submit(work, wait=False)

    def close(self) -> None:
        """Commit what is pending (a caller that did not :meth:`save` first) and close.

        A worker thread still inside a transaction is waited for (:attr:`_db_lock`)."""
        if self._committer is not None:
            self._committer.cancel()
            self._committer = None
        with self._db_lock:
            if self._pending and self._failure is None:
                work, self._pending = self._pending, []
                with contextlib.suppress(CheckpointError):
                    self._apply(work)
            if self._db is not None:
                db, self._db = self._db, None
                with contextlib.suppress(sqlite3.Error):
                    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                db.close()
