"""``auditstream check``: config, files, API authentication and clock, checkpoint, every sink;
one line per check.

Exit 0 when all pass, 2 when the configuration or a file it names is unusable (what ``run``
would refuse with exit 2), 1 when the API or a sink fails. ``WARN`` lines do not fail the
check: they describe something ``run`` handles, but an operator should know.

The table is the whole output: the daemon's log lines (the API client's "cannot reach the
StrongDM API; retrying") would land between its rows and say less than the row does, so
logging is silenced, unless ``[logging] level = "debug"`` asks for it (then on stderr).
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from pathlib import Path
from typing import Literal, TextIO

from auditstream.config import AppConfig, ConfigError, load_config
from auditstream.engine.checkpoint import CheckpointError, CheckpointStore
from auditstream.engine.engine import FUTURE_TOLERANCE_NS, build_sinks, client_settings
from auditstream.ops import startup
from auditstream.ops.exposure import exposed_secrets
from auditstream.ops.preflight import file_problems
from auditstream.ops.secrets import redact
from auditstream.sdm.apiclock import SKEW_WARNING_NS, ApiClock
from auditstream.sdm.client import AuditClient
from auditstream.sdm.errors import ApiError, TransientApiError
from auditstream.sdm.registry import NANOS_PER_SECOND, STREAMS
from auditstream.sinks.http_client import cleartext_warning
from auditstream.sinks.proxy import ProxiedSinkSettings

PROBE_TIMEOUT = 15.0

Verdict = Literal["ok", "FAIL", "WARN"]


def _line(out: TextIO, verdict: Verdict | bool, what: str, detail: str) -> None:
    """One check's line; details quote receivers' answers, so they are scrubbed of secrets."""
    if isinstance(verdict, bool):
        verdict = "ok" if verdict else "FAIL"
    out.write(f"{verdict:<4}  {what:<24} {redact(detail)}\n")
    out.flush()


def counted(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def describe_skew(skew_ns: int) -> str:
    seconds = skew_ns / NANOS_PER_SECOND
    if abs(skew_ns) < SKEW_WARNING_NS:
        return "system clock agrees with the API's"
    direction = "ahead of" if seconds > 0 else "behind"
    return f"system clock {abs(seconds):.0f}s {direction} the API's (windows follow the API's clock)"


def unreachable_advice(endpoint: str) -> str:
    """What to look at when the API does not answer: the address, its name, the way out."""
    return (
        f"check [source] endpoint ({endpoint}), that its name resolves here (DNS), and the egress "
        "proxy or firewall on the way (gRPC reads grpc_proxy / https_proxy and no_proxy)"
    )


async def check_api(config: AppConfig, clock: ApiClock) -> tuple[bool, str]:
    settings = dataclasses.replace(client_settings(config), max_transient_retries=1)
    endpoint = config.source.endpoint
    try:
        async with AuditClient(settings, clock=clock) as client:
            await asyncio.wait_for(client.probe(STREAMS[config.streams.stream_names()[0]]), PROBE_TIMEOUT)
    except TimeoutError:
        return False, f"no answer from {endpoint} within {PROBE_TIMEOUT:.0f}s; {unreachable_advice(endpoint)}"
    except TransientApiError as exc:
        return False, f"cannot reach the StrongDM API: {exc}; {unreachable_advice(endpoint)}"
    except ApiError as exc:
        return False, str(exc)
    return (
        True,
        f"{config.source.endpoint} accepted access key {config.source.access_key!r}; "
        f"{describe_skew(clock.skew_ns())}",
    )


def check_checkpoint(path: Path, clock: ApiClock) -> tuple[Verdict, str]:
    """What ``run`` would find in the checkpoint (readability was checked with the files)."""
    try:
        states = CheckpointStore(path).load()
    except CheckpointError as exc:
        return "FAIL", str(exc)
    if not states:
        return "ok", f"{path}: no state yet; streams start at [streams] start_at"
    now = clock.now_ns()
    ahead = {
        name: s.watermark_ns - now for name, s in states.items() if s.watermark_ns > now + FUTURE_TOLERANCE_NS
    }
    if ahead and clock.observed:
        worst = max(ahead, key=lambda name: ahead[name])
        return (
            "WARN",
            f"{path}: {counted(len(ahead), 'stream')} ({worst} the most, "
            f"{ahead[worst] / NANOS_PER_SECOND:.0f}s) checkpointed ahead of the API's clock, written while "
            "the system clock ran ahead; run pulls them back to the newest record time the API had shown",
        )
    return "ok", f"{path}: {counted(len(states), 'stream')} checkpointed"


async def run_check(path: Path, out: TextIO | None = None) -> int:
    """One line per check on ``out`` (the current ``sys.stdout`` when None: a default bound at
    import would keep writing to whatever stream was ``sys.stdout`` then)."""
    out = sys.stdout if out is None else out
    try:
        config = load_config(path)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            _line(out, False, "config", line)
        return 2
    startup.prepare(config, log_level=None if config.logging.level == "debug" else "critical")
    streams = config.streams.stream_names()
    _line(
        out,
        True,
        "config",
        f"{path}: {counted(len(streams), 'stream')}, {counted(len(config.sinks), 'sink')}",
    )
    risk = config.streams.clock_bound_risk()
    if risk is not None:
        _line(out, "WARN", "streams", risk)
    for exposed in exposed_secrets(path, config):
        _line(out, "WARN", "secrets", exposed)
    for sink_settings in config.sinks:
        if isinstance(sink_settings, ProxiedSinkSettings):
            cleartext = cleartext_warning(sink_settings)
            if cleartext is not None:
                _line(out, "WARN", f"sink {sink_settings.name}", cleartext)
    problems = file_problems(config, config.checkpoint.path)
    for problem in problems:
        _line(out, False, "files", str(problem))
    if not problems:
        _line(out, True, "files", "every file the configuration names can be read or written")
    failed = False
    clock = ApiClock()
    ok, detail = await check_api(config, clock)
    _line(out, ok, "api", detail)
    failed |= not ok
    if not problems:
        verdict, detail = check_checkpoint(config.checkpoint.path, clock)
        _line(out, verdict, "checkpoint", detail)
    for sink in build_sinks(config):
        try:
            result = await asyncio.wait_for(sink.probe(), timeout=PROBE_TIMEOUT)
            ok, detail = result.ok, result.detail
        except TimeoutError:
            ok, detail = False, f"no answer within {PROBE_TIMEOUT:.0f}s"
        except Exception as exc:  # a probe must report, never crash the check
            ok, detail = False, str(exc)
        finally:
            await sink.close()
        _line(out, ok, f"sink {sink.name}", detail)
        failed |= not ok
    if problems:
        return 2
    return 1 if failed else 0
