"""Command line: ``run``, ``backfill``, ``check``, ``emulator``, ``demo``.

Exit codes: 0 ok, 1 runtime failure, 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from auditstream import __version__
from auditstream.config import (
    MOMENT_FORMS,
    AppConfig,
    ConfigError,
    format_moment,
    moment_hint,
    parse_moment,
)
from auditstream.engine.checkpoint import CheckpointError
from auditstream.engine.engine import RunPlan
from auditstream.engine.shutdown import hold_signals_until_the_loop
from auditstream.engine.statelock import CheckpointInUse
from auditstream.ops import startup
from auditstream.ops.secrets import redact
from auditstream.sdm.errors import ApiError
from auditstream.sdm.registry import NANOS_PER_SECOND, select_streams
from auditstream.sinks.base import SinkError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Wrong command-line arguments: exit 2."""


def _parse_moment(flag: str, value: str, *, now_allowed: bool) -> dt.datetime | None:
    try:
        return parse_moment(value, now_allowed=now_allowed)
    except ValueError as exc:
        if value == "now":  # only --from refuses it
            raise UsageError(
                f"{flag} now: a backfill exports the past, so {flag} is a date or time before now; "
                f"use {moment_hint(now_allowed)}"
            ) from None
        raise UsageError(f"{flag}: {exc}") from None


FUTURE_GRACE = dt.timedelta(minutes=1)
"""How far ahead of this host's clock --from/--to may be (clocks differ a little)."""


def _in_the_past(flag: str, moment: dt.datetime, advice: str) -> None:
    """A backfill exports the past: a future date (a typo, often) would keep a one-shot run
    going until then, or export nothing."""
    now = dt.datetime.now(dt.UTC)
    if moment > now + FUTURE_GRACE:
        raise UsageError(
            f"{flag} {format_moment(moment)} is in the future (this host's clock reads "
            f"{format_moment(now.replace(microsecond=0))}): a backfill exports the past; {advice}"
        )


def _to_ns(moment: dt.datetime) -> int:
    return int(moment.timestamp()) * NANOS_PER_SECOND + moment.microsecond * 1000


def _stream_list(flag: str, value: str | None, config: AppConfig) -> list[str]:
    if not value:
        return config.streams.stream_names()
    try:
        return [spec.name for spec in select_streams(p.strip() for p in value.split(",") if p.strip())]
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None


def cmd_run(args: argparse.Namespace) -> int:
    hold_signals_until_the_loop()
    config = startup.load(Path(args.config))
    reset = (
        _stream_list("--reset-checkpoint", ",".join(args.reset_checkpoint), config)
        if args.reset_checkpoint
        else []
    )
    plan = RunPlan(
        streams=config.streams.stream_names(), checkpoint_path=config.checkpoint.path, reset_streams=reset
    )
    from auditstream.ops.runtime import run_daemon

    with startup.streaming(config, plan.checkpoint_path):
        return asyncio.run(run_daemon(config, plan))


def backfill_checkpoint_path(config: AppConfig, start: dt.datetime, end: dt.datetime | None) -> Path:
    stamp = start.strftime("%Y%m%dT%H%M%SZ")
    until = end.strftime("%Y%m%dT%H%M%SZ") if end else "now"
    return config.checkpoint.path.parent / f"backfill-{stamp}-{until}.db"


def cmd_backfill(args: argparse.Namespace) -> int:
    hold_signals_until_the_loop()
    config = startup.load(Path(args.config))
    start = _parse_moment("--from", args.from_, now_allowed=False)
    assert start is not None
    end = _parse_moment("--to", args.to, now_allowed=True) if args.to else None
    _in_the_past("--from", start, "give a --from before now")
    if end is not None:
        _in_the_past("--to", end, "use --to now (the default) to export up to now")
    if end is not None and end <= start:
        raise UsageError(
            f"--to {format_moment(end)} is not later than --from {format_moment(start)}; "
            "give a --to after --from, or --to now (the default)"
        )
    streams = _stream_list("--streams", args.streams, config)
    checkpoint = Path(args.checkpoint) if args.checkpoint else backfill_checkpoint_path(config, start, end)
    if checkpoint.resolve() == config.checkpoint.path.resolve():
        raise UsageError(
            "--checkpoint must differ from [checkpoint] path: a backfill never moves the daemon's checkpoints"
        )
    plan = RunPlan(
        streams=streams,
        checkpoint_path=checkpoint,
        backfill_from_ns=_to_ns(start),
        backfill_to_ns=_to_ns(end) if end else None,
    )
    from auditstream.engine.backfill import run_backfill
    from auditstream.ops.observers import PrometheusObserver  # no metrics served; it logs sink health

    progress = sys.stderr.isatty() or args.progress
    with startup.streaming(config, plan.checkpoint_path):
        return asyncio.run(run_backfill(config, plan, progress, observer=PrometheusObserver()))


def cmd_check(args: argparse.Namespace) -> int:
    from auditstream.ops.check import run_check

    return asyncio.run(run_check(Path(args.config)))


def cmd_demo(args: argparse.Namespace) -> int:
    from auditstream.demo import load_demo, run_demo

    return asyncio.run(run_demo(load_demo(Path(args.config) if args.config else None)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="auditstream", description="Stream StrongDM audit data into your SIEM, without gaps."
    )
    parser.add_argument("--version", action="version", version=f"auditstream {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", required=True, metavar="FILE")
    run.add_argument(
        "--reset-checkpoint",
        action="append",
        default=[],
        metavar="STREAM",
        help="forget a stream's checkpoint and start it at [streams] start_at (repeatable; globs allowed)",
    )
    run.set_defaults(handler=cmd_run)

    backfill = sub.add_parser("backfill", help="export a past period once, then exit")
    backfill.add_argument("--config", required=True, metavar="FILE")
    backfill.add_argument(
        "--from", dest="from_", required=True, metavar="DATE", help=f"where the export starts: {MOMENT_FORMS}"
    )
    backfill.add_argument(
        "--to",
        metavar="DATE",
        default="now",
        help=f"where it ends: {moment_hint(now_allowed=True)} (default: now, the time the backfill starts)",
    )
    backfill.add_argument("--streams", metavar="a,b,...", help="default: [streams] include")
    backfill.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="resume file (default: backfill-FROM-TO.db beside the checkpoint)",
    )
    backfill.add_argument(
        "--progress", action="store_true", help="show progress even when stderr is not a TTY"
    )
    backfill.set_defaults(handler=cmd_backfill)

    check = sub.add_parser("check", help="validate config, authenticate, probe every sink")
    check.add_argument("--config", required=True, metavar="FILE")
    check.set_defaults(handler=cmd_check)

    # Listed for --help only: main() hands "emulator ..." to the emulator's own parser, so
    # `run` never imports the emulator (a third of the package).
    sub.add_parser("emulator", help="run the StrongDM API emulator (auditstream emulator --help)")

    demo = sub.add_parser("demo", help="the daemon against a built-in emulator, printing events")
    demo.add_argument("--config", metavar="FILE", help="default: the built-in demo configuration")
    demo.set_defaults(handler=cmd_demo)
    return parser


def _fail(exc: BaseException, code: int) -> int:
    """One line per line of the message, scrubbed of every registered secret."""
    for line in (redact(str(exc)) or type(exc).__name__).splitlines():
        print(f"auditstream: {line}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["emulator"]:
        from auditstream.emulator.__main__ import main as emulator_main

        return emulator_main(arguments[1:])
    parser = build_parser()
    args = parser.parse_args(arguments)
    try:
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except (ConfigError, UsageError) as exc:
        return _fail(exc, EXIT_USAGE)
    except (CheckpointError, CheckpointInUse, ApiError, SinkError, OSError) as exc:
        return _fail(exc, EXIT_FAILURE)
    except KeyboardInterrupt:
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
