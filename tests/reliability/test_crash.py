"""SIGKILL at random moments, during live traffic and during a backfill: nothing is lost,
nothing is invented, and a kill makes the daemon send again at most one page per stream.

The daemon runs as its own process against an emulator on a background thread; after each
kill it is started again on the same checkpoint. What the file sink holds at the end is
compared with the emulator's own records, by content (``support.compare``).

What a kill can make the daemon send twice: each stream's deliverer hands one batch at a time
to the sinks and saves the checkpoint (that batch's keys) before it takes the next, and a
batch is the new records of one listed page, so at most ``page_size`` records. The batches
waiting in the stream's queue (up to ``[engine] queue_batches``) were listed but never
written: after the restart they are listed again and written for the first time, not twice.
So at a SIGKILL at most one page per stream is written but not yet in the checkpoint, and
only that is written again. Per kill and per stream, the lines written since the previous kill
whose record is written again later are therefore at most ``page_size``. The page sizes here
are smaller than the streams (10 against 30 to 1,000 records live, 50 against 600 to 6,000 in
the backfill), so the bound is far below what re-sending a stream would write.
"""

from __future__ import annotations

import collections
import datetime as dt
import random
import signal
import subprocess
from pathlib import Path

import orjson
import pytest

from auditstream.emulator import EmulatorOptions, QueriesTime, running_emulator
from auditstream.sdm.registry import DEFAULT_STREAM_NAMES
from tests.e2e.support import write_daemon_config
from tests.helpers import wait_until
from tests.reliability.support import (
    Identity,
    assert_exactly_the_truth,
    backfill_args,
    compare,
    daemon_running,
    delivered_lines,
    duplicates,
    identity,
    line_count,
    run_daemon_until_complete,
    start_daemon,
    tail,
    tally,
    wait_for_every_record,
)

pytestmark = pytest.mark.reliability

KILLS = 5
LIVE_PAGE_SIZE = 10
BACKFILL_PAGE_SIZE = 50
STREAMS = list(DEFAULT_STREAM_NAMES)


def written_again(lines: list[Identity], kills_at: list[int]) -> list[collections.Counter[str]]:
    """Per kill, per stream: the lines written since the previous kill (``kills_at``: the
    file's complete lines at each kill) whose record is written again later."""
    last = {record: index for index, record in enumerate(lines)}
    counts = []
    start = 0
    for end in kills_at:
        counts.append(collections.Counter(lines[i][0] for i in range(start, end) if last[lines[i]] > i))
        start = end
    return counts


def assert_a_kill_resends_at_most_a_page(lines: list[Identity], kills_at: list[int], page_size: int) -> None:
    for kill, counts in enumerate(written_again(lines, kills_at), 1):
        over = {stream: count for stream, count in counts.items() if count > page_size}
        assert not over, f"kill {kill} made the daemon write again more than a page ({page_size}): {over}"


def sigkill_after_more_lines(
    proc: subprocess.Popen[bytes], out: Path, more: int, log: Path, ended_early: str
) -> None:
    """SIGKILL ``proc`` once the file sink holds ``more`` lines beyond what it holds now."""
    target = line_count(out) + more
    wait_until(lambda: line_count(out) >= target or proc.poll() is not None, 60, "more output")
    assert proc.poll() is None, f"{ended_early}:\n{tail(log)}"
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def test_sigkill_during_live_traffic_loses_nothing(tmp_path, figures):
    """Under the harder reading of the Queries filter (start time): completions of sessions
    open across the kills lie far behind the cursor and are found only through the open set
    kept in the checkpoint. (tests/e2e/test_unknowns.py plays both readings without kills.)"""
    queries_time = QueriesTime.START
    rng = random.Random(f"crash-{queries_time.value}")
    options = EmulatorOptions(
        seed=7,
        records=300,
        live=60,
        live_for=15,
        late_rate=0.2,
        # Under the start-time reading a query is listed its duration (up to 20 s) late already:
        # both together stay within the 30 s overlap of tests/e2e/support.py.
        late_max_seconds=8,
        queries_time=queries_time,
        long_sessions=5,
        long_session_close_within=12,
        live_session_seconds=(1.0, 8.0),
    )
    out = tmp_path / "out.jsonl"
    log = tmp_path / "daemon.log"
    during_traffic = 0
    kills_at: list[int] = []
    with running_emulator(options) as emu:
        config = write_daemon_config(emu, tmp_path, source={"page_size": LIVE_PAGE_SIZE})
        with daemon_running(config, log) as daemon:
            for _ in range(KILLS):
                more = rng.randint(50, 400)
                sigkill_after_more_lines(daemon.proc, out, more, log, "daemon died on its own")
                kills_at.append(line_count(out))
                during_traffic += not emu.live_finished
                daemon.restart()
            assert during_traffic > 0, "kills must land while records still arrive"
            wait_for_every_record(emu, STREAMS, out, 90)
        result = compare(emu, STREAMS, out)
        produced = emu.live.stats.produced if emu.live else 0
    figures(
        load=f"{options.live:g} records/s live for {options.live_for:g}s ({produced:,} records), "
        f"{options.late_rate:.0%} late, {options.long_sessions} long sessions",
        faults=f"SIGKILL x{KILLS}, {during_traffic} while records were being generated "
        f"(Queries filter on {queries_time.value} time)",
        **tally(result.delivered, result.lost),
    )
    assert_exactly_the_truth(result, f" across {KILLS} kills")
    assert_a_kill_resends_at_most_a_page(delivered_lines(out), kills_at, LIVE_PAGE_SIZE)


def test_sigkill_during_a_backfill_then_resuming_loses_nothing(tmp_path, figures):
    rng = random.Random("crash-backfill")
    # 6,000 activities + 6,000 queries + 26 x 600 history records = 27,600
    options = EmulatorOptions(seed=9, records=6_000)
    out = tmp_path / "out.jsonl"
    log = tmp_path / "backfill.log"
    with running_emulator(options) as emu:
        config = write_daemon_config(emu, tmp_path, source={"page_size": BACKFILL_PAGE_SIZE})
        since = dt.datetime.now(dt.UTC) - dt.timedelta(days=8)
        until = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)  # the same period on every resume
        expected = sum(len(emu.truth(stream)) for stream in STREAMS)
        kills_at: list[int] = []
        for _ in range(KILLS):
            proc = start_daemon(config, log, *backfill_args(since, until), command="backfill")
            more = rng.randint(500, 3000)
            sigkill_after_more_lines(proc, out, more, log, "the backfill ended before the kill")
            kills_at.append(line_count(out))
        proc = start_daemon(config, log, *backfill_args(since, until), command="backfill")
        code = proc.wait(120)
        assert code == 0, tail(log)
        assert "backfill complete" in tail(log, 500)
        result = compare(emu, STREAMS, out)
    figures(
        load=f"backfill of {expected:,} records, {len(STREAMS)} streams",
        faults=f"SIGKILL x{KILLS} at {', '.join(f'{n:,}' for n in kills_at)} lines, then resumed",
        **tally(result.delivered, result.lost),
    )
    assert kills_at[-1] < expected, "every kill landed before the end"
    assert_exactly_the_truth(result, f" across {KILLS} kills")
    assert_a_kill_resends_at_most_a_page(delivered_lines(out), kills_at, BACKFILL_PAGE_SIZE)
    assert not (tmp_path / "state" / "checkpoints.db").exists(), "the daemon's checkpoint is untouched"


def test_a_torn_last_line_from_a_killed_write_is_cut_at_the_next_start(tmp_path, figures):
    """SIGKILL can cut a large write() short (the kernel stops copying once a fatal signal is
    pending), leaving half a line at the end of the file. That batch was never acknowledged,
    so it is sent again; the next start must not glue its first event onto the torn half."""
    options = EmulatorOptions(seed=4, records=200)
    out: Path = tmp_path / "out.jsonl"
    log = tmp_path / "daemon.log"
    torn = b'{"logType":"activities","id":"torn-by-a-kill","timestamp":"2024-05-01T12:'
    before = {"logType": "activities", "id": "written-before"}
    out.write_bytes(orjson.dumps(before) + b"\n" + torn)
    with running_emulator(options) as emu:
        config = write_daemon_config(emu, tmp_path)
        # every line is parsed: a glued line would fail here
        run_daemon_until_complete(emu, STREAMS, config, out, log)
        result = compare(emu, STREAMS, out)
    figures(
        load=f"{len(result.delivered) - 1:,} records",
        faults="half a line left at the end of the file sink's file",
        records=len(result.delivered) - 1,
        lost=len(result.lost),
        duplicates=duplicates(result.delivered),
    )
    assert not result.lost
    assert result.invented == {identity(before)}, "only the line written before the start is not a record"
    assert torn not in out.read_bytes()
    assert out.read_bytes().startswith(orjson.dumps(before) + b"\n")
