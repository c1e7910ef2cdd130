"""What the engine says as it starts: a checkpoint written while the host clock ran ahead is
pulled back (and when nothing shows where to, the hint is a command that works as typed); an
overlap too short for the API's clock bound is said."""

from __future__ import annotations

import datetime as dt
import shlex
from pathlib import Path
from types import SimpleNamespace

import structlog

from auditstream.cli import build_parser
from auditstream.config import parse_start_at
from auditstream.emulator import EmulatorOptions
from auditstream.engine.checkpoint import StreamState
from auditstream.engine.engine import Engine, RunPlan
from auditstream.sdm.registry import NANOS_PER_SECOND as S
from tests.e2e.support import daemon_config

NOW = 1_800_000_000 * S + 123_456_789


def engine(tmp_path: Path, **streams: str) -> Engine:
    emu = SimpleNamespace(address="127.0.0.1:1", options=EmulatorOptions())
    config = daemon_config(emu, tmp_path, streams=streams)  # type: ignore[arg-type]
    return Engine(config, RunPlan(streams=["activities"], checkpoint_path=config.checkpoint.path))


async def test_a_live_run_says_what_an_overlap_below_the_clock_bound_risks(tmp_path: Path) -> None:
    for overlap, said in (("30s", True), ("2m", False)):
        stopped = engine(tmp_path / overlap, overlap=overlap)
        stopped.stop.set()  # stops before the first call: only what it says at start
        with structlog.testing.capture_logs() as captured:
            await stopped.run()
        risks = [e for e in captured if e["log_level"] == "warning" and "clock bound" in str(e["event"])]
        assert bool(risks) == said, captured


def test_a_watermark_ahead_without_evidence_names_a_backfill_that_runs_as_typed(tmp_path: Path) -> None:
    """The old hint (`auditstream backfill --from <when the clock went wrong>`) lacked the
    required --config, and without --to or --streams re-sent every stream up to whenever it
    was run. The hint now parses, names the stream, and ends where listing resumed."""
    state = StreamState(watermark_ns=NOW + 30 * 86_400 * S)
    with structlog.testing.capture_logs() as captured:
        engine(tmp_path)._pull_back("activities", state, NOW)
    assert state.watermark_ns == NOW
    (line,) = [entry for entry in captured if entry["log_level"] == "error"]
    command = str(line["hint"]).split("`")[1]
    words = shlex.split(
        command.replace("FILE", "/etc/auditstream.toml").replace(
            "<the last time the clock was right>", "2026-01-01"
        )
    )
    assert words[:2] == ["auditstream", "backfill"]
    args = build_parser().parse_args(words[1:])
    assert args.config == "/etc/auditstream.toml" and args.streams == "activities"
    to = parse_start_at(args.to)
    assert to is not None and to >= dt.datetime.fromtimestamp(NOW / S, dt.UTC), "the gap is covered"
    assert to - dt.datetime.fromtimestamp(NOW / S, dt.UTC) < dt.timedelta(seconds=1)
