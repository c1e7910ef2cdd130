"""``/metrics``, ``/healthz`` and ``/readyz`` on one port (``[metrics] listen``)."""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from auditstream.engine.engine import Engine
from auditstream.sinks.base import SinkState


def readiness(engine: Engine, max_lag: float) -> tuple[bool, dict[str, Any]]:
    """Ready = authenticated to the API, no sink failed, every stream's lag under max_lag."""
    reasons: list[str] = []
    if not engine.authenticated:
        reasons.append("no successful poll of the StrongDM API yet")
    sinks = {}
    for name, health in engine.sink_health().items():
        sinks[name] = {"state": health.state.value, "error": health.last_error}
        if health.state is SinkState.FAILED:
            reasons.append(f"sink {name} failed: {health.last_error}")
    lag = engine.lag_seconds()
    for stream, seconds in lag.items():
        if seconds > max_lag:
            reasons.append(f"stream {stream} is {seconds:.0f}s behind (max_lag {max_lag:.0f}s)")
    body = {"ready": not reasons, "reasons": reasons, "sinks": sinks, "lag_seconds": lag}
    return not reasons, body


def build_app(engine: Engine, max_lag: float) -> web.Application:
    started = time.time()

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        body = {"ok": True, "uptime_seconds": round(time.time() - started, 3)}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def readyz(_: web.Request) -> web.Response:
        ok, body = readiness(engine, max_lag)
        return web.Response(
            body=orjson.dumps(body), status=200 if ok else 503, content_type="application/json"
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def start_server(engine: Engine, listen: str, max_lag: float) -> web.AppRunner:
    host, _, port = listen.rpartition(":")
    runner = web.AppRunner(build_app(engine, max_lag), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host.strip("[]") or "0.0.0.0", int(port))
    await site.start()
    return runner
