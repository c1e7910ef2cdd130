"""The checkpoint store: SQLite, batches and windows committed in groups, 0600, a backup
taken at every start, a JSON checkpoint of 0.1 migrated once, and errors that name the file
and the way out."""

from __future__ import annotations

import asyncio
import collections
import os
import random
import re
import sqlite3
import stat
import subprocess
import sys
import threading
import zlib
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from auditstream.engine.checkpoint import (
    CheckpointError,
    CheckpointStore,
    OpenQuery,
    QueryChanges,
    StreamState,
)
from auditstream.engine.observer import NullEngineObserver
from tests.helpers import async_wait_until

S = 1_000_000_000


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_batches_and_windows_round_trip_with_mode_0600(tmp_path):
    store = CheckpointStore(tmp_path / "state" / "cp.db")
    state = StreamState(watermark_ns=123, swept_ns=100)
    await store.save({"activities": state, "queries": StreamState(watermark_ns=456)})
    await store.commit_batch("activities", [("a1", 100)])
    await store.commit_batch("activities", [("a2", 180), ("a3", 200)])
    await store.commit_batch("queries", [("q1:start", 10)], QueryChanges({"q1": OpenQuery(10, 20)}))
    state.watermark_ns, state.swept_ns = 999, 150
    await store.commit_progress("activities", state, prune_before_ns=150)
    store.close()
    loaded = CheckpointStore(store.path).load()
    assert loaded["activities"].watermark_ns == 999 and loaded["activities"].final_ns == 150
    # A batch's keys share its latest time: a2 stays with a3 (kept a little longer, never less).
    assert loaded["activities"].delivered == {"a2": 200, "a3": 200}, "a1 could no longer be listed"
    assert loaded["queries"].open_queries == {"q1": OpenQuery(10, 20)}
    assert loaded["queries"].delivered == {"q1:start": 10}
    for name in ("cp.db", "cp.db-wal", "cp.db-shm"):
        path = store.path.with_name(name)
        assert not path.exists() or mode(path) == 0o600, name
    assert mode(store.path.parent) == 0o700


async def test_settled_and_expired_queries_leave_the_open_set(tmp_path):
    store = CheckpointStore(tmp_path / "cp.db")
    state = StreamState(watermark_ns=1)
    await store.save({"queries": state})
    await store.commit_batch("queries", [], QueryChanges({"q1": OpenQuery(1, 2), "q2": OpenQuery(3, 4)}))
    await store.commit_batch("queries", [("q1", 5)], QueryChanges(closed=["q1"]))
    await store.commit_progress("queries", state, prune_before_ns=0, expired=["q2"])
    store.close()
    assert CheckpointStore(store.path).load()["queries"].open_queries == {}


async def test_a_commit_costs_the_batch_not_the_state(tmp_path):
    """Appending a batch of 500 keys to a store that holds 100,000 writes a few pages, not
    the store (the JSON file it replaces was rewritten whole at every batch)."""
    store = CheckpointStore(tmp_path / "cp.db")
    state = StreamState(watermark_ns=1)
    await store.save({"activities": state})
    for batch in range(200):
        await store.commit_batch("activities", [(f"k{batch}-{i}", batch) for i in range(500)])
    wal = store.path.with_name("cp.db-wal")
    before = wal.stat().st_size if wal.exists() else 0
    store._open().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    await store.commit_batch("activities", [(f"last-{i}", 10**6) for i in range(500)])
    written = wal.stat().st_size
    assert written < 64 * 1024, f"one batch of 500 keys wrote {written} bytes to the WAL (before: {before})"
    store.close()


def bytes_written() -> int:
    """What this process has handed to write() and pwrite() so far, whatever the filesystem."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/self/io")


async def test_live_batches_of_fifty_cost_under_two_hundred_bytes_a_record(tmp_path):
    """The live goal (< 200 checkpoint bytes per delivered record) at the SDK's page of 50:
    each batch committed, each window's progress committed, the WAL copied into the file
    (everything the daemon's checkpoint writes). SQLite writes whole pages, so the page size
    sets the cost of a commit: 4 KiB pages cost 400 bytes a record here, 1 KiB pages 158."""
    store = CheckpointStore(tmp_path / "cp.db")
    state = StreamState(watermark_ns=1)
    await store.save({"activities": state})
    db = store._open()
    before = bytes_written()
    for batch in range(40):
        keys = [(f"{batch:08x}-{i:04x}-4f1c-9a7e-{i:012x}", batch) for i in range(50)]
        await store.commit_batch("activities", keys)
        state.watermark_ns = state.swept_ns = batch + 1
        await store.commit_progress("activities", state, prune_before_ns=batch - 5)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    per_record = (bytes_written() - before) / (40 * 50)
    assert per_record < 200, f"{per_record:.0f} bytes written per record"
    store.close()


async def test_group_commits_at_a_thousand_records_a_second_cost_under_two_hundred_bytes_a_record(tmp_path):
    """The live goal at 1,000 records/s in pages of 50 over 28 streams (one of them ten times
    busier), with group commits: each second's batches in one transaction, a window per
    stream every 30 s pruning what it covers, the WAL copied into the file. Records spread
    evenly over each second (the daemon gets them in bursts, one per poll: cheaper still)."""
    rng = random.Random(5)
    store = CheckpointStore(tmp_path / "cp.db", commit_interval=3600)  # a group per flush() here
    states = {f"stream-{i}": StreamState(watermark_ns=0) for i in range(28)}
    await store.save(states)
    db = store._open()
    names, weights = list(states), [10] + [1] * 27
    before, records = bytes_written(), 0
    for second in range(60):
        per_stream = collections.Counter(rng.choices(names, weights, k=1000))
        for name, count in per_stream.items():
            for first in range(0, count, 50):
                size = min(50, count - first)
                await store.commit_batch(
                    name, [(f"{rng.getrandbits(128):032x}", second * S) for _ in range(size)]
                )
                records += size
        for i, (name, state) in enumerate(states.items()):
            if (second + i) % 30 == 0:
                state.watermark_ns = state.swept_ns = second * S
                await store.commit_progress(name, state, prune_before_ns=(second - 15) * S)
        await store.flush()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    per_record = (bytes_written() - before) / records
    assert per_record < 200, f"{per_record:.0f} bytes written per record"
    store.close()


async def test_a_backup_is_taken_at_start_and_restores(tmp_path):
    store = CheckpointStore(tmp_path / "cp.db")
    await store.save({"activities": StreamState(watermark_ns=5)})
    store.load()
    store.take_backup()
    assert mode(store.backup) == 0o600
    state = StreamState(watermark_ns=9)
    await store.commit_progress("activities", state, 0)
    store.close()
    assert CheckpointStore(store.backup).load()["activities"].watermark_ns == 5
    assert CheckpointStore(store.path).load()["activities"].watermark_ns == 9


def test_absent_file_is_a_first_start(tmp_path):
    assert CheckpointStore(tmp_path / "cp.db").load() == {}


@pytest.mark.parametrize("content", [b"not a database at all" * 100, b"SQLite format 3\x00" + b"\xff" * 4000])
def test_corrupt_file_stops_with_the_file_and_the_choices(tmp_path, content):
    path = tmp_path / "cp.db"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        CheckpointStore(path).load()
    message = str(err.value)
    assert str(path) in message and ".bak" in message and "start_at" in message


CRASH_AFTER_THE_BACKUP = """
import asyncio, os, sys
from pathlib import Path
from auditstream.engine.checkpoint import CheckpointStore, StreamState

async def main() -> None:
    store = CheckpointStore(Path(sys.argv[1]))
    await store.save({"activities": StreamState(watermark_ns=5)})
    store.take_backup()
    await store.commit_progress("activities", StreamState(watermark_ns=9), 0)
    os._exit(0)  # a crash: the last commits are still in the WAL

asyncio.run(main())
"""


def test_the_restore_command_of_the_hint_gives_back_the_backup_whatever_wal_a_crash_left(tmp_path):
    """Restoring ``.bak`` next to the WAL a crash left makes SQLite replay that WAL onto the
    restored file: the old hint (``cp .bak``) gave back the crashed run's state (watermark 9),
    not the backup's, and in general a mix of the two."""
    path = tmp_path / "cp.db"
    subprocess.run([sys.executable, "-c", CRASH_AFTER_THE_BACKUP, str(path)], check=True, timeout=60)
    assert path.with_name("cp.db-wal").stat().st_size > 0, "the premise: a WAL left by the crash"
    path.unlink()  # lost (a disk, an operator): the store says it is missing and how to restore
    with pytest.raises(CheckpointError, match="missing") as err:
        CheckpointStore(path).load()
    commands = re.findall(r"`([^`]*cp [^`]*\.bak[^`]*)`", str(err.value))
    assert commands, str(err.value)
    subprocess.run(["sh", "-c", commands[0]], check=True, timeout=60)
    assert CheckpointStore(path).load()["activities"].watermark_ns == 5, "the backup's state, as promised"


def test_a_store_from_a_newer_auditstream_is_refused(tmp_path):
    path = tmp_path / "cp.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(CheckpointError, match="schema 99"):
        CheckpointStore(path).load()


async def test_a_reset_stream_is_dropped_alone(tmp_path):
    store = CheckpointStore(tmp_path / "cp.db")
    await store.save({"activities": StreamState(5), "queries": StreamState(6)})
    await store.commit_batch("queries", [("q", 1)])
    store.close()
    states = CheckpointStore(store.path).load(reset=frozenset({"queries"}))
    assert list(states) == ["activities"] and states["activities"].watermark_ns == 5
    assert list(CheckpointStore(store.path).load()) == ["activities"], "dropped from the store too"


def test_missing_file_with_a_backup_is_not_a_silent_fresh_start(tmp_path):
    (tmp_path / "cp.db.bak").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="missing"):
        CheckpointStore(tmp_path / "cp.db").load()


def json_checkpoint(path: Path) -> None:
    path.write_bytes(
        orjson.dumps(
            {
                "schema_version": 1,
                "newest_record_ns": 777,
                "streams": {
                    "activities": {"watermark_ns": 600 * S, "delivered": {"a1": 590 * S}},
                    "queries": {
                        "watermark_ns": 700 * S,
                        "delivered": {},
                        "open_queries": {"q1": {"start_ns": 1, "first_seen_ns": 2}},
                    },
                },
            }
        )
    )


@pytest.mark.parametrize("name", ["checkpoints.json", "checkpoints.db"])
def test_a_json_checkpoint_of_0_1_is_migrated_once(tmp_path, name):
    """At the configured path itself, or as the old default name beside a new ``.db`` path.
    Its watermark was final only up to ``watermark - overlap`` (that daemon re-read the overlap
    at every poll), so that is the sweep mark."""
    legacy = tmp_path / "checkpoints.json"
    json_checkpoint(legacy)
    store = CheckpointStore(tmp_path / name, json_overlap_ns=300 * S)
    states = store.load()
    assert states["activities"].watermark_ns == 600 * S and states["activities"].final_ns == 300 * S
    assert states["activities"].delivered == {"a1": 590 * S}
    assert states["queries"].open_queries == {"q1": OpenQuery(1, 2)}
    assert store.loaded_newest_record_ns == 777
    store.close()
    assert (tmp_path / "checkpoints.json.migrated").exists(), "the JSON file is kept"
    assert CheckpointStore(tmp_path / name).load()["queries"].watermark_ns == 700 * S, "read as SQLite now"
    assert mode(tmp_path / name) == 0o600


def test_a_corrupt_json_checkpoint_is_not_migrated(tmp_path):
    path = tmp_path / "checkpoints.json"
    path.write_bytes(b'{"schema_version": 1')
    with pytest.raises(CheckpointError, match="corrupt"):
        CheckpointStore(path).load()
    assert path.read_bytes() == b'{"schema_version": 1', "the evidence is left alone"


def test_a_directory_nobody_can_write_is_reported_at_start_even_as_root(tmp_path):
    """A regular file where the directory should be: no permission bit root could bypass."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    with pytest.raises(CheckpointError, match="not a directory"):
        CheckpointStore(blocker / "cp.db").check_writable()


async def test_a_failing_write_raises_naming_the_file_and_keeps_the_last_state(tmp_path):
    store = CheckpointStore(tmp_path / "cp.db")
    await store.save({"activities": StreamState(5)})
    store._open().execute("PRAGMA query_only = ON")  # every write now fails, as on a read-only disk
    with pytest.raises(CheckpointError, match=r"cannot write checkpoint .*cp\.db"):
        await store.commit_progress("activities", StreamState(9), 0)
    store.close()
    assert CheckpointStore(store.path).load()["activities"].watermark_ns == 5


async def test_concurrent_commits_all_land(tmp_path):
    store = CheckpointStore(tmp_path / "cp.db")
    await store.save({"activities": StreamState(1)})

    async def commit(i: int) -> None:
        await store.commit_batch("activities", [(f"k{i}", i)])

    await asyncio.gather(*(commit(i) for i in range(50)))
    store.close()
    assert len(CheckpointStore(store.path).load()["activities"].delivered) == 50


def test_the_store_is_created_private_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        store = CheckpointStore(tmp_path / "deep" / "cp.db")
        store.load()
        store.take_backup()
    finally:
        os.umask(old)
    assert mode(tmp_path / "deep") == 0o700
    assert mode(store.backup) == 0o600


def durable(path: Path) -> tuple[dict[str, int], set[str]]:
    """What another process would find: each stream's watermark, and every delivered key."""
    reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        marks = dict(reader.execute("SELECT name, watermark_ns FROM streams").fetchall())
        keys = {
            key
            for (blob,) in reader.execute("SELECT keys FROM delivered")
            for key in orjson.loads(zlib.decompress(blob))
        }
    finally:
        reader.close()
    return marks, keys


class WatchedLock(asyncio.Lock):
    """The store's writer lock, telling when a writer had to wait for another."""

    def __init__(self) -> None:
        super().__init__()
        self.contended = False

    async def acquire(self) -> bool:
        self.contended |= self.locked()
        return await super().acquire()


async def test_a_commit_cancelled_inside_its_transaction_lets_the_shutdown_save_through(
    tmp_path, monkeypatch
):
    """At shutdown the engine cancels its pollers, and one may be awaiting its commit while
    the worker thread is inside the transaction: cancelling the await does not stop the
    thread. The shutdown save, on the same connection, must wait for it instead of failing
    with "cannot start a transaction within a transaction"."""
    store = CheckpointStore(tmp_path / "cp.db")  # interval 0: the poller awaits its commit
    await store.save({"activities": StreamState(1)})
    store._lock = lock = WatchedLock()
    inside, release = threading.Event(), threading.Event()
    append = CheckpointStore._append_keys

    def held_inside(db: sqlite3.Connection, stream: str, acks: list[tuple[str, int]]) -> None:
        inside.set()
        assert release.wait(10), "never released"
        append(db, stream, acks)

    monkeypatch.setattr(CheckpointStore, "_append_keys", staticmethod(held_inside))
    commit = asyncio.create_task(store.commit_batch("activities", [("k1", 5)]))
    await async_wait_until(inside.is_set, 10, "the worker inside the transaction")
    commit.cancel()
    save = asyncio.create_task(store.save({"activities": StreamState(9)}))
    # The save either waits for the lock (the transaction is still running) or has failed.
    await async_wait_until(lambda: save.done() or lock.contended, 10, "the save to wait or fail")
    release.set()
    await asyncio.wait_for(save, 10)
    with pytest.raises(asyncio.CancelledError):
        await commit
    store.close()
    assert durable(store.path) == ({"activities": 9}, {"k1"}), "both transactions landed"


async def test_a_group_that_fails_after_its_caller_was_cancelled_is_not_forgotten(tmp_path, monkeypatch):
    """The cancelled caller never sees the worker's failure; the store does: the shutdown save
    that follows refuses, rather than write marks on top of keys that are not on disk."""
    store = CheckpointStore(tmp_path / "cp.db", commit_interval=3600)
    await store.save({"activities": StreamState(1)})
    inside, release = threading.Event(), threading.Event()

    def held_then_failing(db: sqlite3.Connection, stream: str, acks: list[tuple[str, int]]) -> None:
        inside.set()
        assert release.wait(10), "never released"
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(CheckpointStore, "_append_keys", staticmethod(held_then_failing))
    await store.commit_batch("activities", [("k1", 5)])
    state = StreamState(watermark_ns=9)
    await store.commit_progress("activities", state, prune_before_ns=0)
    flush = asyncio.create_task(store.flush())
    await async_wait_until(inside.is_set, 10, "the worker inside the transaction")
    flush.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await flush
    with pytest.raises(CheckpointError, match="disk I/O error"):
        await store.save({"activities": state})
    store.close()
    assert durable(store.path) == ({"activities": 1}, set())


async def test_a_backup_that_fails_after_its_caller_was_cancelled_does_not_stop_commits(
    tmp_path, monkeypatch
):
    """The periodic backup is cancelled at shutdown like the pollers; its failure (a .bak that
    cannot be written) says nothing about the store, whose commits go on."""
    store = CheckpointStore(tmp_path / "cp.db")
    await store.save({"activities": StreamState(1)})
    inside, release = threading.Event(), threading.Event()

    def held_then_failing(self: CheckpointStore) -> None:
        inside.set()
        assert release.wait(10), "never released"
        raise CheckpointError(f"cannot write checkpoint {self.backup}: No space left on device")

    monkeypatch.setattr(CheckpointStore, "_copy_to_backup", held_then_failing)
    backup = asyncio.create_task(store.back_up())
    await async_wait_until(inside.is_set, 10, "the backup under way")
    backup.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await backup
    await store.commit_batch("activities", [("k1", 5)])
    store.close()
    assert durable(store.path)[1] == {"k1"}


class Crash(BaseException):
    """The process dying here: nothing after it runs, not even an ``except Exception``."""


@pytest.mark.parametrize("name", ["checkpoints.json", "checkpoints.db"])
def test_a_crash_at_any_step_of_the_migration_is_migrated_again_at_the_next_start(
    tmp_path, monkeypatch, name
):
    """The swap that ends a migration is a few renames and links. A run crashes before the
    first, the second, ... until one completes without reaching its crash; after each crash,
    the next start finds the JSON's states (migrating again, or in the store) and the JSON is
    still kept somewhere."""
    real = {"replace": os.replace, "link": os.link}
    crashes = 0
    for crash_at in range(1, 10):
        work = tmp_path / f"crash-at-{crash_at}"
        work.mkdir()
        json_checkpoint(work / "checkpoints.json")
        steps: list[str] = []

        def step(call: str, steps: list[str] = steps, crash_at: int = crash_at) -> Callable[..., None]:
            def run(*args: object, **kwargs: object) -> None:
                steps.append(call)
                if len(steps) == crash_at:
                    raise Crash
                real[call](*args, **kwargs)

            return run

        with monkeypatch.context() as patched:
            patched.setattr(os, "replace", step("replace"))
            patched.setattr(os, "link", step("link"))
            try:
                CheckpointStore(work / name, json_overlap_ns=300 * S).load()
            except Crash:
                crashes += 1
            else:
                break
        store = CheckpointStore(work / name, json_overlap_ns=300 * S)
        states = store.load()
        store.close()
        where = f"after a crash at step {crash_at} of {steps}"
        assert states["activities"].watermark_ns == 600 * S, where
        assert states["activities"].final_ns == 300 * S, where
        assert states["queries"].open_queries == {"q1": OpenQuery(1, 2)}, where
        kept = [work / "checkpoints.json.migrated", work / "checkpoints.json"]
        assert any(p.exists() and p.read_bytes().startswith(b"{") for p in kept), f"JSON kept, {where}"
        assert CheckpointStore(work / name).load()["queries"].watermark_ns == 700 * S, f"a store, {where}"
    assert crashes >= 2, f"the swap has at least two steps, crashed {crashes} times"


def write_config(tmp_path: Path, checkpoint: Path) -> Path:
    """Enough configuration to reach the file checks (they come before any API call)."""
    config = tmp_path / "config.toml"
    config.write_text(
        f'[source]\nendpoint = "127.0.0.1:1"\naccess_key = "ak"\nsecret_key = "c2VjcmV0c2VjcmV0"\n'
        f'insecure = true\n[checkpoint]\npath = "{checkpoint}"\n'
        '[[sinks]]\ntype = "stdout"\nname = "out"\n[metrics]\nlisten = ""\n'
    )
    return config


async def corrupt_keys(checkpoint: Path, column: str, value: object) -> None:
    """A store with one row of delivered keys, that row's ``column`` then set to ``value``."""
    store = CheckpointStore(checkpoint)
    await store.save({"activities": StreamState(watermark_ns=5)})
    await store.commit_batch("activities", [("k1", 10)])
    store.close()
    db = sqlite3.connect(checkpoint)
    db.execute(f"UPDATE delivered SET {column} = ?", (value,))
    db.commit()
    db.close()


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("keys", b"not compressed at all"),
        ("keys", zlib.compress(b'["k1", "k2"')),
        ("keys", zlib.compress(b'{"k1": 1}')),
        ("keys", "text, not a blob"),
        ("relist_until_ns", "soon"),
    ],
    ids=["zlib", "json", "not-a-list", "not-a-blob", "time"],
)
async def test_corrupt_delivered_keys_are_refused_naming_the_file_and_the_choices(tmp_path, column, value):
    checkpoint = tmp_path / "cp.db"
    await corrupt_keys(checkpoint, column, value)
    with pytest.raises(CheckpointError) as err:
        CheckpointStore(checkpoint).load()
    message = str(err.value)
    assert str(checkpoint) in message and "activities" in message, message
    assert f"cp {checkpoint}.bak {checkpoint}" in message and "start_at" in message, "the choices"


@pytest.mark.parametrize("command", ["run", "backfill", "check"])
async def test_corrupt_delivered_keys_stop_the_start_in_one_line_exit_2(tmp_path, command):
    """A row of delivered keys that does not decode is an unusable file like any other: one
    line naming the file and the ways out, exit 2 (systemd and the backfill Job do not retry
    it), never a zlib traceback."""
    checkpoint = tmp_path / "state" / "checkpoints.db"
    await corrupt_keys(checkpoint, "keys", b"not compressed at all")
    # A backfill keeps its own file: the daemon's is elsewhere, and the corrupt one is named.
    config = write_config(
        tmp_path, checkpoint.with_name("daemon.db") if command == "backfill" else checkpoint
    )
    args = {
        "run": [],
        "backfill": ["--from", "2024-05-01", "--to", "2024-05-02", "--checkpoint", str(checkpoint)],
        "check": [],
    }[command]
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "auditstream.cli", command, "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if "checkpoint.path" in line]
    assert len(lines) == 1, output
    assert str(checkpoint) in lines[0] and "activities" in lines[0], lines[0]
    assert f"cp {checkpoint}.bak {checkpoint}" in lines[0] and "start_at" in lines[0], "the choices"
    if command != "check":
        assert result.stderr.splitlines() == lines, "one line, nothing else"


# -- group commit ------------------------------------------------------------------------------


class CountingWrites(NullEngineObserver):
    """Counts the transactions that reached the disk (one per group commit)."""

    def __init__(self) -> None:
        self.writes = 0

    def checkpoint_written(self) -> None:
        self.writes += 1


async def test_acknowledged_batches_are_committed_together_once_the_interval_passed(tmp_path):
    """A batch's call returns at once; the batches of an interval go in one transaction."""
    observer = CountingWrites()
    store = CheckpointStore(tmp_path / "cp.db", observer=observer, commit_interval=1.0)
    await store.save({"activities": StreamState(watermark_ns=1)})
    assert observer.writes == 1, "a save is written before it returns, whatever the interval"
    for i in range(5):
        await store.commit_batch("activities", [(f"k{i}", 100 + i)])
    assert durable(store.path)[1] == set() and observer.writes == 1, "nothing written before the interval"
    await async_wait_until(lambda: observer.writes > 1, 10, "the group commit")
    assert observer.writes == 2, "five batches, one transaction"
    assert durable(store.path)[1] == {f"k{i}" for i in range(5)}
    store.close()


async def test_an_interval_of_zero_commits_each_batch_before_it_returns(tmp_path):
    store = CheckpointStore(tmp_path / "cp.db", commit_interval=0)
    await store.save({"activities": StreamState(watermark_ns=1)})
    await store.commit_batch("activities", [("k1", 5)])
    assert durable(store.path)[1] == {"k1"}
    store.close()


async def test_a_windows_marks_are_never_durable_before_the_keys_of_its_batches(tmp_path):
    """Windows of three streams, one to four batches each, in a random interleaving, with a
    group commit at random points (between two batches of a window too). After every call,
    what another process could read has, for each stream, the keys of every window its
    watermark covers."""
    rng = random.Random(11)
    store = CheckpointStore(tmp_path / "cp.db", commit_interval=3600)  # commits only when told
    streams = {name: StreamState(watermark_ns=0) for name in ("activities", "queries", "replays")}
    await store.save(streams)
    keys_of: dict[str, dict[int, set[str]]] = {name: {} for name in streams}
    seen: set[tuple[tuple[str, int], ...]] = set()

    def check() -> None:
        marks, keys = durable(store.path)
        for name, watermark in marks.items():
            covered = set().union(*(k for w, k in keys_of[name].items() if w <= watermark))
            assert covered <= keys, f"{name}: marks at {watermark} without keys {sorted(covered - keys)}"
        seen.add(tuple(sorted(marks.items())))

    async def maybe_group_commit() -> None:
        check()
        if rng.random() < 0.15:
            await store.flush()
            check()

    for _ in range(150):
        name = rng.choice(list(streams))
        window = len(keys_of[name]) + 1
        keys_of[name][window] = set()
        for batch in range(rng.randint(1, 4)):
            acks = [(f"{name}-{window}-{batch}-{i}", window) for i in range(rng.randint(1, 5))]
            keys_of[name][window] |= {key for key, _ in acks}
            await store.commit_batch(name, acks)
            await maybe_group_commit()
        state = streams[name]
        state.watermark_ns = state.swept_ns = window
        await store.commit_progress(name, state, prune_before_ns=0)
        await maybe_group_commit()
    await store.flush()
    check()
    assert len(seen) > 20, f"too few distinct states checked: {len(seen)}"
    store.close()


async def test_the_shutdown_save_commits_what_is_pending_first(tmp_path):
    """The marks a shutdown save writes rest on batches acknowledged since the last group
    commit: they go in first, in the same transaction."""
    store = CheckpointStore(tmp_path / "cp.db", commit_interval=3600)
    state = StreamState(watermark_ns=1)
    await store.save({"activities": state})
    await store.commit_batch("activities", [("k1", 10), ("k2", 11)])
    state.watermark_ns = state.swept_ns = 20
    await store.commit_progress("activities", state, prune_before_ns=0)
    await store.commit_batch("activities", [("k3", 30)])
    state.watermark_ns = 40
    await store.save({"activities": state})
    assert durable(store.path) == ({"activities": 40}, {"k1", "k2", "k3"})
    store.close()


async def test_close_commits_what_is_pending(tmp_path):
    store = CheckpointStore(tmp_path / "cp.db", commit_interval=3600)
    await store.save({"activities": StreamState(watermark_ns=1)})
    await store.commit_batch("activities", [("k1", 10)])
    store.close()
    assert durable(store.path)[1] == {"k1"}


async def test_a_failed_group_commit_is_raised_by_the_next_call_and_nothing_after_it_lands(tmp_path):
    """A group that failed is not on disk, so no later group may be (its marks would rest on
    keys that are not): every later commit and the shutdown save raise, naming the file."""
    store = CheckpointStore(tmp_path / "cp.db", commit_interval=3600)
    state = StreamState(watermark_ns=5)
    await store.save({"activities": state})
    await store.commit_batch("activities", [("k1", 10)])
    store._open().execute("PRAGMA query_only = ON")  # every write now fails, as on a read-only disk
    with pytest.raises(CheckpointError, match=r"cannot write checkpoint .*cp\.db"):
        await store.flush()
    store._open().execute("PRAGMA query_only = OFF")  # the disk is back: still nothing may land
    with pytest.raises(CheckpointError, match=r"cannot write checkpoint .*cp\.db"):
        await store.commit_batch("activities", [("k2", 11)])
    state.watermark_ns = 9
    with pytest.raises(CheckpointError, match=r"cannot write checkpoint .*cp\.db"):
        await store.save({"activities": state})
    store.close()
    assert durable(store.path) == ({"activities": 5}, set())


KILLED_CHILD = """
import asyncio, sys
from pathlib import Path

from auditstream.engine.checkpoint import CheckpointStore, StreamState
from auditstream.engine.observer import NullEngineObserver


class Written(NullEngineObserver):
    def __init__(self):
        self.event = asyncio.Event()

    def checkpoint_written(self):
        self.event.set()


async def main():
    written = Written()
    store = CheckpointStore(Path(sys.argv[1]), observer=written, commit_interval=0.05)
    state = StreamState(watermark_ns=0)
    await store.save({"activities": state})
    written.event.clear()
    # Window 1: two batches and its marks, committed by the group commit.
    await store.commit_batch("activities", [("w1-a", 10), ("w1-b", 11)])
    await store.commit_batch("activities", [("w1-c", 12)])
    state.watermark_ns = state.swept_ns = 20
    await store.commit_progress("activities", state, prune_before_ns=0)
    await asyncio.wait_for(written.event.wait(), 10)
    # Window 2 and a batch of window 3: acknowledged (delivered), not yet committed.
    await store.commit_batch("activities", [("w2-a", 30), ("w2-b", 31)])
    state.watermark_ns = state.swept_ns = 40
    await store.commit_progress("activities", state, prune_before_ns=0)
    await store.commit_batch("activities", [("w3-a", 50)])
    print("acknowledged", flush=True)
    sys.stdin.readline()  # the loop stops here: the kill lands before the next group commit


asyncio.run(main())
"""


def test_a_kill_between_acknowledgement_and_group_commit_resends_exactly_the_uncommitted(tmp_path):
    """SIGKILL after three batches were acknowledged but before their group commit: the
    checkpoint holds every committed key and mark and none of the uncommitted ones, so a
    restart lists those again and sends exactly them again; the marks do not cover them,
    so none is skipped."""
    path = tmp_path / "cp.db"
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_CHILD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line == b"acknowledged\n", (line, child.stderr.read() if child.stderr else b"")
    finally:
        child.kill()
        child.wait(10)
    states = CheckpointStore(path).load()
    assert set(states["activities"].delivered) == {"w1-a", "w1-b", "w1-c"}, "committed: kept"
    assert states["activities"].watermark_ns == 20, "window 2's marks were not committed either"
    uncommitted_times = [30, 31, 50]
    assert states["activities"].final_ns < min(uncommitted_times), "listed again: none skipped"


async def test_a_clean_stop_commits_what_was_pending_so_a_restart_sends_nothing_twice(tmp_path):
    """With no group commit due before the stop (an interval of an hour), everything the
    sinks acknowledged is in the checkpoint after a clean stop: the shutdown save commits it."""
    from auditstream.emulator import Emulator, EmulatorOptions
    from auditstream.engine.engine import Engine, RunPlan
    from tests.e2e.support import daemon_config
    from tests.engine.test_delivery import FakeSink

    def engine(emu: Emulator, sink: FakeSink) -> Engine:
        config = daemon_config(
            emu,
            tmp_path,
            streams={"include": ["activities"]},
            source={"page_size": 20},
            extra={"checkpoint": {"path": str(tmp_path / "cp.db"), "commit_interval": "1h"}},
        )
        return Engine(
            config, RunPlan(streams=["activities"], checkpoint_path=config.checkpoint.path), sinks=[sink]
        )

    async with Emulator(EmulatorOptions(records=300, live=100, live_for=2)) as emu:
        sink = FakeSink("s")
        first = engine(emu, sink)
        task = asyncio.create_task(first.run())
        await async_wait_until(lambda: emu.live_finished, 30, "live traffic to end")
        truth = {key for key, _ in emu.truth("activities")}
        await async_wait_until(lambda: set(sink.keys()) == truth, 30, "every record")
        started_at = durable(tmp_path / "cp.db")[0]["activities"]
        state = first.states["activities"]
        assert started_at < state.watermark_ns and durable(tmp_path / "cp.db")[1] == set(), "nothing due yet"
        first.stop.set()
        await asyncio.wait_for(task, 15)
        saved = CheckpointStore(tmp_path / "cp.db").load()["activities"]
        assert (saved.watermark_ns, saved.final_ns) == (state.watermark_ns, state.final_ns), "marks committed"
        assert state.delivered, "recent records: keys a listing may return again"
        assert set(saved.delivered) == set(state.delivered), "those keys committed too"
        second = engine(emu, sink)
        task = asyncio.create_task(second.run())
        await async_wait_until(lambda: second.pollers and second.pollers[0].last_success_ns, 20, "a poll")
        second.stop.set()
        await asyncio.wait_for(task, 15)
    assert sorted(sink.keys()) == sorted(truth), "a clean stop and a restart send nothing twice"
