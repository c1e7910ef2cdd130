"""Running the daemon against the emulator and comparing what the sinks got with the truth."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from auditstream.config import AppConfig, parse_config
from auditstream.emulator import Emulator
from auditstream.engine.engine import Engine, RunPlan
from auditstream.sdm.client import AuditClient, ClientSettings
from auditstream.sdm.registry import STREAMS

S = 1_000_000_000


def daemon_config(
    emu: Emulator,
    tmp_path: Path,
    *,
    streams: dict[str, Any] | None = None,
    source: dict[str, Any] | None = None,
    sinks: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> AppConfig:
    start = (dt.datetime.now(dt.UTC) - dt.timedelta(days=8)).isoformat()
    data: dict[str, Any] = {
        "source": {
            "endpoint": emu.address,
            "access_key": emu.options.access_key,
            "secret_key": emu.options.secret_key,
            "insecure": True,
            "page_size": 100,
            "timeout": "5s",
            "max_rate_limit_wait": "5s",
            # Polls every 0.2 s over 28 streams want ~8,000 calls a minute: far above a real
            # daemon's (30 s polls), so the test daemon gets a budget to match.
            "calls_per_minute": 100_000,
        },
        "streams": {
            "poll_interval": "0.2s",
            "overlap": "30s",
            "tail": "5s",
            "settle": "0.2s",
            "start_at": start,
            "long_query_recheck": "0.5s",
            **(streams or {}),
        },
        # Group commits every 0.2 s (the default is 1 s): what a test sees committed when it kills
        # or starves the daemon is then close to what was acknowledged.
        "checkpoint": {"path": str(tmp_path / "state" / "checkpoints.db"), "commit_interval": "0.2s"},
        "sinks": sinks
        or [{"type": "file", "name": "out", "path": str(tmp_path / "out.jsonl"), "fsync": False}],
        "metrics": {"listen": None},
        "engine": {"sink_failure_pause": "0.2s", "shutdown_timeout": "10s"},
    }
    if source:
        data["source"].update(source)
    data.update(extra or {})
    return parse_config(data, env={})


def read_events(path: Path) -> collections.Counter[tuple[str, str]]:
    """(logType, id) of every complete line a file sink wrote, with repeats counted.

    A line still being written (no newline yet) is left for the next read."""
    if not path.exists():
        return collections.Counter()
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    data = path.read_bytes()
    for line in data[: data.rfind(b"\n") + 1].splitlines():
        event = orjson.loads(line)
        counts[(event["logType"], event["id"])] += 1
    return counts


def truth_keys(emu: Emulator, streams: list[str]) -> set[tuple[str, str]]:
    return {(stream, key) for stream in streams for key, _ in emu.truth(stream)}


def missing(
    emu: Emulator, streams: list[str], delivered: collections.Counter[tuple[str, str]]
) -> set[tuple[str, str]]:
    return truth_keys(emu, streams) - set(delivered)


async def run_until_complete(
    engine: Engine, emu: Emulator, out: Path, deadline_s: float = 60.0
) -> collections.Counter[tuple[str, str]]:
    """Run the engine until the sink holds every record the emulator serves, then stop it."""
    task = asyncio.create_task(engine.run())
    deadline = time.monotonic() + deadline_s
    try:
        while True:
            if task.done():
                task.result()
                raise AssertionError("the engine stopped on its own")
            delivered = read_events(out)
            gone = missing(emu, engine.plan.streams, delivered)
            # Live traffic, late records and sessions still to complete are part of the truth.
            if not gone and emu.live_finished and emu.store.pending_count() == 0:
                break
            if time.monotonic() > deadline:
                sample = sorted(gone)[:5]
                raise AssertionError(
                    f"{len(gone)} records never delivered within {deadline_s}s, e.g. {sample}"
                )
            await asyncio.sleep(0.1)
    finally:
        engine.stop.set()
        await asyncio.wait_for(task, timeout=30)
    return read_events(out)


def client_settings(emu: Emulator, **overrides: Any) -> ClientSettings:
    """Our API client's settings for ``emu``: its address and key, plain gRPC, then ``overrides``."""
    base: dict[str, Any] = {
        "endpoint": emu.address,
        "access_key": emu.options.access_key,
        "secret_key": emu.options.secret_key,
        "insecure": True,
    }
    return ClientSettings(**(base | overrides))


@dataclass
class Neighbour:
    calls: int = 0  # listing calls made so far


@contextlib.asynccontextmanager
async def noisy_neighbour(emu: Emulator) -> AsyncIterator[Neighbour]:
    """Another tool spending the same API key's budget while the block runs, so the daemon
    really gets refused."""
    neighbour = Neighbour()
    stop = asyncio.Event()

    async def spend_the_budget() -> None:
        now = time.time_ns()
        settings = client_settings(emu, page_size=1, max_transient_retries=0)
        async with AuditClient(settings) as client:
            while not stop.is_set():
                try:
                    async for _ in client.pages(STREAMS["activities"], now - 3600 * S, now):
                        break
                except Exception:
                    pass
                neighbour.calls += 1

    task = asyncio.create_task(spend_the_budget())
    try:
        yield neighbour
    finally:
        stop.set()
        await task


def live_engine(config: AppConfig) -> Engine:
    plan = RunPlan(streams=config.streams.stream_names(), checkpoint_path=config.checkpoint.path)
    return Engine(config, plan)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return orjson.dumps(value).decode()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table: [sinks.retry] inside a [[sinks]] item
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    if value is None:
        raise ValueError("TOML has no null")
    raise TypeError(type(value))


def write_toml(path: Path, document: dict[str, Any]) -> Path:
    """Enough TOML for our configs: tables, arrays of tables, scalars and lists."""
    lines: list[str] = []
    for section, body in document.items():
        if isinstance(body, list):
            for item in body:
                lines.append(f"[[{section}]]")
                lines.extend(f"{k} = {toml_value(v)}" for k, v in item.items() if v is not None)
        else:
            lines.append(f"[{section}]")
            lines.extend(f"{k} = {toml_value(v)}" for k, v in body.items() if v is not None)
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def daemon_config_document(
    emu_address: str, access_key: str, secret_key: str, tmp_path: Path, **streams: Any
) -> dict[str, Any]:
    start = (dt.datetime.now(dt.UTC) - dt.timedelta(days=8)).isoformat()
    return {
        "source": {
            "endpoint": emu_address,
            "access_key": access_key,
            "secret_key": secret_key,
            "insecure": True,
            "page_size": 200,
            "timeout": "5s",
            "calls_per_minute": 100_000,  # polls every 0.3 s: far above a real daemon's needs
        },
        "streams": {
            "poll_interval": "0.3s",
            "overlap": "30s",
            "tail": "5s",
            "settle": "0.2s",
            "start_at": start,
            "long_query_recheck": "1s",
            **streams,
        },
        # Group commits every 0.2 s (the default is 1 s): what a test sees committed when it kills
        # or starves the daemon is then close to what was acknowledged.
        "checkpoint": {"path": str(tmp_path / "state" / "checkpoints.db"), "commit_interval": "0.2s"},
        "sinks": [{"type": "file", "name": "out", "path": str(tmp_path / "out.jsonl")}],
        "metrics": {"listen": ""},
        "logging": {"format": "json"},
    }


def write_daemon_config(
    emu: Emulator,
    tmp_path: Path,
    *,
    source: dict[str, Any] | None = None,
    sinks: list[dict[str, Any]] | None = None,
) -> Path:
    """``tmp_path/config.toml`` for the daemon as its own process against ``emu``:
    ``daemon_config_document`` with ``source`` keys changed and ``sinks`` replacing its file sink
    (``tmp_path/out.jsonl``)."""
    doc = daemon_config_document(emu.address, emu.options.access_key, emu.options.secret_key, tmp_path)
    doc["source"].update(source or {})
    if sinks is not None:
        doc["sinks"] = sinks
    return write_toml(tmp_path / "config.toml", doc)
