"""Running the daemon in-process with its HTTP server, and reading what it serves."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from auditstream.config import AppConfig
from auditstream.engine.engine import Engine, RunPlan
from auditstream.ops.observers import PrometheusObserver
from auditstream.ops.runtime import run_daemon
from auditstream.ops.sdnotify import SystemdNotifier
from tests.e2e.support import toml_value
from tests.helpers import async_wait_until, free_port

Labels = frozenset[tuple[str, str]]


@dataclass(frozen=True)
class Scrape:
    """One /metrics answer: every sample by name and labels."""

    samples: dict[tuple[str, Labels], float]

    def value(self, name: str, **labels: str) -> float:
        """The one sample with exactly these labels (KeyError if there is none)."""
        return self.samples[(name, frozenset(labels.items()))]

    def get(self, name: str, default: float = 0.0, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), default)

    def total(self, name: str, **labels: str) -> float:
        """Sum over every sample of ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= ls)

    def names(self) -> set[str]:
        return {name for name, _ in self.samples}


def parse_metrics(text: str) -> Scrape:
    samples: dict[tuple[str, Labels], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return Scrape(samples)


def scrape_registry() -> Scrape:
    """What /metrics would answer now (the registry is per process: take it as a baseline)."""
    return parse_metrics(generate_latest(REGISTRY).decode())


@dataclass
class Daemon:
    engine: Engine
    base_url: str
    task: asyncio.Task[int]
    http: aiohttp.ClientSession

    async def scrape(self) -> Scrape:
        async with self.http.get(self.base_url + "/metrics") as response:
            assert response.status == 200
            return parse_metrics(await response.text())

    async def readyz(self) -> tuple[int, dict[str, Any]]:
        async with self.http.get(self.base_url + "/readyz") as response:
            return response.status, await response.json()

    async def healthz(self) -> tuple[int, dict[str, Any]]:
        async with self.http.get(self.base_url + "/healthz") as response:
            return response.status, await response.json()


def with_metrics_listen(config: AppConfig, **metrics: Any) -> AppConfig:
    """``config`` serving /metrics on a free loopback port (plus other [metrics] keys)."""
    settings = config.metrics.model_copy(update={"listen": f"127.0.0.1:{free_port()}", **metrics})
    return config.model_copy(update={"metrics": settings})


@contextlib.asynccontextmanager
async def running_daemon(config: AppConfig, notifier: SystemdNotifier | None = None) -> AsyncIterator[Daemon]:
    """``run_daemon`` on this loop without signal handlers; stopped (and checked) on exit."""
    assert config.metrics.listen, "use with_metrics_listen()"
    plan = RunPlan(streams=config.streams.stream_names(), checkpoint_path=config.checkpoint.path)
    engine = Engine(config, plan, observer=PrometheusObserver())  # what `auditstream run` builds
    task = asyncio.create_task(
        run_daemon(
            config, engine.plan, engine, handle_signals=False, notifier=notifier or SystemdNotifier({})
        )
    )
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        daemon = Daemon(engine, f"http://{config.metrics.listen}", task, http)

        async def serving() -> bool:
            if task.done():
                task.result()
            try:
                status, _ = await daemon.healthz()
            except aiohttp.ClientConnectionError:
                return False
            return status == 200

        await async_wait_until(serving, 10, "the daemon's HTTP server")
        try:
            yield daemon
        finally:
            engine.stop.set()
            assert await asyncio.wait_for(task, timeout=30) == 0


def _toml(value: Any) -> str:
    """``toml_value`` plus inline tables, and lists of them."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return toml_value(value)


def write_config(path: Path, document: dict[str, Any]) -> Path:
    """A config document (tables and arrays of tables of any values) as a TOML file."""
    lines: list[str] = []
    for section, body in document.items():
        for item in body if isinstance(body, list) else [body]:
            lines.append(f"[[{section}]]" if isinstance(body, list) else f"[{section}]")
            lines.extend(f"{k} = {_toml(v)}" for k, v in item.items() if v is not None)
            lines.append("")
    path.write_text("\n".join(lines))
    return path


CLI = [sys.executable, "-m", "auditstream.cli"]


class Run:
    """``auditstream run`` as a subprocess, its output in files, its HTTP endpoints at hand."""

    def __init__(self, config: Path, listen: str, out_dir: Path) -> None:
        self.config = config
        self.base = f"http://{listen}"
        self.stdout = out_dir / "stdout"
        self.stderr = out_dir / "stderr"
        self.process: asyncio.subprocess.Process | None = None
        self.served: list[str] = []  # bodies of /metrics and /readyz answers

    async def start(self) -> None:
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.process = await asyncio.create_subprocess_exec(
                *CLI, "run", "--config", str(self.config),
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=err,
            )  # fmt: skip

    async def get(self, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as http, http.get(self.base + path) as response:
            text = await response.text()
            self.served.append(text)
            return response.status, text

    async def answering(self) -> bool:
        assert self.process is not None
        if self.process.returncode is not None:
            raise AssertionError(f"daemon exited {self.process.returncode}: {self.stderr.read_text()}")
        try:
            return (await self.get("/healthz"))[0] == 200
        except aiohttp.ClientConnectionError:
            return False

    async def stop(self) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), 30)
        finally:
            if self.process.returncode is None:
                self.process.kill()

    def output(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")


async def run_check(config: Path) -> tuple[int, str]:
    """``auditstream check`` as a subprocess: its exit code and output (stderr included)."""
    process = await asyncio.create_subprocess_exec(
        *CLI, "check", "--config", str(config), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace")
