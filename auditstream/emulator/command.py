"""``auditstream emulator``: the emulator as a process, for demos and subprocess tests.

Prints ``listening on HOST:PORT`` on stdout once it accepts calls (a parent process waits
for that line), and stops cleanly on SIGTERM or SIGINT, writing ``--truth-file``. Exit
status 2: bad options (an unusable ``--log-key-file`` included); 1: cannot listen.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from auditstream.emulator.credentials import DEMO_ACCESS_KEY, DEMO_SECRET_KEY
from auditstream.emulator.emulator import Emulator
from auditstream.emulator.logkey import LogKeyError
from auditstream.emulator.options import (
    Bound,
    EmulatorOptions,
    Order,
    PageOrder,
    QueriesTime,
    ResetAt,
    SecretLogsTimeFilter,
    TimePrecision,
)
from auditstream.sdm.registry import SERVED_STREAM_NAMES

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a probability between 0 and 1")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT``; port 0 picks a free one."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"--listen wants HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("network and credentials")
    g.add_argument(
        "--listen",
        type=parse_listen,
        default=("127.0.0.1", 0),
        metavar="HOST:PORT",
        help="address to serve on (default 127.0.0.1:0, a free port)",
    )
    g.add_argument(
        "--access-key",
        default=DEMO_ACCESS_KEY,
        metavar="KEY",
        help="the only access key accepted (default: the demo key)",
    )
    g.add_argument(
        "--secret-key",
        default=DEMO_SECRET_KEY,
        metavar="BASE64",
        help="its base64 secret (default: the demo secret)",
    )
    g.add_argument(
        "--tls-cert", metavar="PEM", help="serve TLS with this certificate chain (default: plaintext)"
    )
    g.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")

    g = parser.add_argument_group("data")
    g.add_argument("--seed", type=int, default=1, metavar="N", help="seed of the generated data (default 1)")
    g.add_argument(
        "--records",
        type=int,
        default=1000,
        metavar="N",
        help="records in each of activities and queries; N/10 (at least 5) per history stream and "
        "in managed secret logs",
    )
    g.add_argument(
        "--history-records",
        type=int,
        default=None,
        metavar="N",
        help="records per history stream and in managed secret logs (overrides N/10)",
    )
    g.add_argument(
        "--same-timestamp",
        type=_positive_int,
        default=1,
        metavar="N",
        help="generated records come in groups of N sharing one timestamp",
    )
    g.add_argument(
        "--time-precision",
        choices=[p.value for p in TimePrecision],
        default="ns",
        help="precision of generated timestamps (default ns)",
    )
    g.add_argument(
        "--hostile",
        action="store_true",
        help="pipes, backslashes, =, quotes, ], newlines, CR, non-ASCII and 10 KB values in strings",
    )
    g.add_argument(
        "--streams",
        default=",".join(SERVED_STREAM_NAMES),
        metavar="LIST",
        help=f"comma-separated streams that get data (default: all {len(SERVED_STREAM_NAMES)})",
    )
    g.add_argument(
        "--secret-fraction",
        type=_probability,
        default=0.0,
        metavar="P",
        help="fraction of SQL statements, SSH and kubectl commands and commands typed in replays "
        "that carry a planted credential (passwords, tokens, AWS keys, a pasted PEM key)",
    )

    g = parser.add_argument_group("encrypted query logs")
    g.add_argument(
        "--encrypted-fraction",
        type=_probability,
        default=0.0,
        metavar="P",
        help="fraction of queries encrypted to the organisation's key, as StrongDM does when log "
        "encryption is on (default 0: none)",
    )
    g.add_argument(
        "--log-key-file",
        default=None,
        metavar="PEM",
        help="the organisation's RSA key (private, or public only); a path that does not exist "
        "gets a new private key (mode 0600) for the daemon to read. Default: a key generated in "
        "memory",
    )

    g = parser.add_argument_group("API semantics (the real service's unknowns)")
    g.add_argument("--after-bound", choices=[b.value for b in Bound], default="inclusive")
    g.add_argument("--before-bound", choices=[b.value for b in Bound], default="exclusive")
    g.add_argument(
        "--order",
        choices=[o.value for o in Order],
        default="unordered",
        help="order of a whole listing across pages (default unordered)",
    )
    g.add_argument(
        "--page-order",
        choices=[o.value for o in PageOrder],
        default="auto",
        help="records inside a page: auto (shuffled iff --order unordered), sorted, shuffled",
    )
    g.add_argument(
        "--max-page-size",
        type=_positive_int,
        default=1000,
        metavar="N",
        help="cap on meta.limit (limit 0 means the SDK default of 50)",
    )
    g.add_argument(
        "--short-pages",
        type=_probability,
        default=0.0,
        metavar="P",
        help="fraction of pages returned with fewer records than asked (maybe none)",
    )
    g.add_argument(
        "--queries-time",
        choices=[q.value for q in QueriesTime],
        default="completed",
        help="time the Queries filter applies to: start (timestamp) or completed (completed_at)",
    )
    g.add_argument(
        "--secret-logs-time-filter",
        choices=[f.value for f in SecretLogsTimeFilter],
        default="accepted",
        help="ManagedSecrets.Logs and after:/before: (undocumented): accepted (filter on created_at) "
        "or refused (INVALID_ARGUMENT, as for an unknown field; an empty filter lists everything)",
    )
    g.add_argument(
        "--reset-at",
        choices=[r.value for r in ResetAt],
        default="bucket",
        help="what rate_limit.reset_at announces: bucket (when the token bucket is full again; one "
        "token back on a refusal) or next-minute (the next whole minute, as a fixed window resets)",
    )

    g = parser.add_argument_group("adversities (all off by default)")
    g.add_argument("--rate-limit", type=_positive_int, default=None, metavar="REQUESTS_PER_MINUTE")
    g.add_argument(
        "--rate-limit-burst",
        type=_positive_int,
        default=None,
        metavar="N",
        help="token-bucket capacity (default: a minute's worth, REQUESTS_PER_MINUTE)",
    )
    g.add_argument(
        "--fault-rate",
        type=_probability,
        default=0.0,
        metavar="P",
        help="fraction of calls failing with UNAVAILABLE, INTERNAL or a stall",
    )
    g.add_argument(
        "--slow-fault-seconds",
        type=_non_negative,
        default=3.0,
        metavar="S",
        help="how long a stalled call hangs before DEADLINE_EXCEEDED",
    )
    g.add_argument("--latency-ms", type=_non_negative, default=0.0, metavar="MS")
    g.add_argument(
        "--late-rate",
        type=_probability,
        default=0.0,
        metavar="P",
        help="fraction of new records whose timestamp is up to --late-max in the past",
    )
    g.add_argument("--late-max", type=_non_negative, default=120.0, metavar="SECONDS")
    g.add_argument("--live", type=_non_negative, default=0.0, metavar="RECORDS_PER_SECOND")
    g.add_argument(
        "--live-for",
        type=_non_negative,
        default=None,
        metavar="SECONDS",
        help="stop live generation after this long (default: forever)",
    )
    g.add_argument(
        "--long-sessions",
        type=int,
        default=0,
        metavar="N",
        help="SSH/RDP/Kubernetes sessions already open at start-up",
    )
    g.add_argument(
        "--long-session-close-within",
        type=_non_negative,
        default=60.0,
        metavar="SECONDS",
        help="those sessions complete within this many seconds",
    )

    g = parser.add_argument_group("bookkeeping")
    g.add_argument("--truth-file", default=None, metavar="PATH",
                   help="on SIGTERM or stop, write every visible record as JSON lines")  # fmt: skip


def options_from_args(args: argparse.Namespace) -> EmulatorOptions:
    host, port = args.listen
    return EmulatorOptions(
        host=host,
        port=port,
        access_key=args.access_key,
        secret_key=args.secret_key,
        seed=args.seed,
        records=args.records,
        history_records=args.history_records,
        same_timestamp=args.same_timestamp,
        time_precision=TimePrecision(args.time_precision),
        hostile=args.hostile,
        streams=tuple(s.strip() for s in args.streams.split(",") if s.strip()),
        after_bound=Bound(args.after_bound),
        before_bound=Bound(args.before_bound),
        order=Order(args.order),
        page_order=PageOrder(args.page_order),
        max_page_size=args.max_page_size,
        short_pages=args.short_pages,
        queries_time=QueriesTime(args.queries_time),
        secret_logs_time_filter=SecretLogsTimeFilter(args.secret_logs_time_filter),
        reset_at=ResetAt(args.reset_at),
        secret_fraction=args.secret_fraction,
        encrypted_fraction=args.encrypted_fraction,
        log_key_file=args.log_key_file,
        rate_limit=args.rate_limit,
        fault_rate=args.fault_rate,
        slow_fault_seconds=args.slow_fault_seconds,
        latency_ms=args.latency_ms,
        late_rate=args.late_rate,
        late_max_seconds=args.late_max,
        live=args.live,
        live_for=args.live_for,
        long_sessions=args.long_sessions,
        long_session_close_within=args.long_session_close_within,
        truth_file=args.truth_file,
        rate_limit_burst=args.rate_limit_burst,
        tls_cert_file=args.tls_cert,
        tls_key_file=args.tls_key,
    )


async def run_command(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; 0 on a clean stop, 2 on bad options, 1 if it cannot listen."""
    try:
        options = options_from_args(args)
    except ValueError as exc:
        print(f"auditstream emulator: {exc}", file=sys.stderr)
        return 2
    emulator = Emulator(options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in SIGNALS:  # before start: generating a million records takes a while
        loop.add_signal_handler(signum, stop.set)
    try:
        try:
            await emulator.start()
        except OSError as exc:
            print(f"auditstream emulator: {exc}", file=sys.stderr)
            return 1
        except LogKeyError as exc:
            print(f"auditstream emulator: {exc}", file=sys.stderr)
            return 2
        if not stop.is_set():
            print(f"listening on {emulator.address}", flush=True)
            await stop.wait()
        await emulator.stop()  # writes --truth-file
        return 0
    finally:
        for signum in SIGNALS:
            loop.remove_signal_handler(signum)
