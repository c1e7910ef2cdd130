"""``/metrics``, ``/healthz`` and ``/readyz`` on one port (``[metrics] listen``).

``/healthz`` only proves the event loop answers (a liveness probe must not restart a daemon
because its SIEM is down); ``/readyz`` applies :class:`~auditstream.ops.status.DaemonStatus`
and says why in its JSON body. Both ``/readyz`` and ``/metrics`` are scrubbed of secrets
(by the status and by :func:`~auditstream.ops.metrics.exposition`).
"""

from __future__ import annotations

import os
import time

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from auditstream.ops.metrics import exposition
from auditstream.ops.status import DaemonStatus


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def build_app(status: DaemonStatus) -> web.Application:
    started = time.monotonic()

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return _json({"ok": True, "uptime_seconds": round(time.monotonic() - started, 3)})

    async def readyz(_: web.Request) -> web.Response:
        ok, body = status.readiness()
        return _json(body, 200 if ok else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


def split_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9464`` for IPv6; an empty host means every interface)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


async def start_server(status: DaemonStatus, listen: str) -> web.AppRunner:
    host, port = split_listen(listen)
    runner = web.AppRunner(build_app(status), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise OSError(
            f"cannot listen on [metrics] listen = {listen!r} ({reason}): stop what listens there "
            '(another auditstream?) or set another [metrics] listen ("" turns the server off)'
        ) from None
    return runner
