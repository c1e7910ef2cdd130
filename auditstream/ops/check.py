"""``auditstream check``: config, API authentication, every sink; one line per check.

Exit 0 when all pass, 1 when the API or a sink fails, 2 when the config is invalid.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from pathlib import Path
from typing import TextIO

from auditstream.config import AppConfig, ConfigError, load_config
from auditstream.engine.engine import build_sinks, client_settings
from auditstream.ops.logging import redact, register_secrets
from auditstream.ops.secrets import config_secrets
from auditstream.sdm.client import AuditClient
from auditstream.sdm.errors import ApiError
from auditstream.sdm.registry import NANOS_PER_SECOND, STREAMS

PROBE_TIMEOUT = 15.0


def _line(out: TextIO, ok: bool, what: str, detail: str) -> None:
    """One check's line; details quote receivers' answers, so they are scrubbed of secrets."""
    out.write(f"{'ok  ' if ok else 'FAIL'}  {what:<24} {redact(detail)}\n")
    out.flush()


async def check_api(config: AppConfig) -> tuple[bool, str]:
    settings = client_settings(config)
    settings = dataclasses.replace(settings, max_transient_retries=1, page_size=1)
    now = time.time_ns()
    try:
        async with AuditClient(settings) as client:
            pages = client.pages(STREAMS["activities"], now - 60 * NANOS_PER_SECOND, now)
            await asyncio.wait_for(anext(pages), timeout=PROBE_TIMEOUT)
            await pages.aclose()
    except TimeoutError:
        return (
            False,
            f"no answer from {config.source.endpoint} within {PROBE_TIMEOUT:.0f}s; check [source] endpoint",
        )
    except ApiError as exc:
        return False, str(exc)
    return True, f"{config.source.endpoint} accepted access key {config.source.access_key!r}"


async def run_check(path: Path, out: TextIO = sys.stdout) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            _line(out, False, "config", line)
        return 2
    register_secrets(config_secrets(config))
    streams = config.streams.stream_names()
    _line(out, True, "config", f"{path}: {len(streams)} streams, {len(config.sinks)} sinks")
    failed = False
    ok, detail = await check_api(config)
    _line(out, ok, "api", detail)
    failed |= not ok
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
    return 1 if failed else 0
