"""What the daemon says about itself: readiness (``/readyz``) and the scrape-time metrics.

Both come from one place so that ``auditstream_ready`` and ``/readyz`` can never disagree.
The readiness body quotes errors (a sink's last error often quotes its receiver's answer,
and ``/readyz`` listens on every interface in containers), so it is scrubbed of secrets as a
whole before it leaves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from auditstream.ops.metrics import StatusSnapshot
from auditstream.ops.secrets import redact, scrub
from auditstream.sdm.errors import AuthenticationFailed
from auditstream.sdm.registry import NANOS_PER_SECOND
from auditstream.sinks.base import SinkHealth, SinkState


class _StreamState(Protocol):
    watermark_ns: int


class EngineView(Protocol):
    """The parts of :class:`~auditstream.engine.engine.Engine` the status reads."""

    @property
    def authenticated(self) -> bool: ...

    @property
    def states(self) -> Mapping[str, _StreamState]: ...

    def sink_health(self) -> dict[str, SinkHealth]: ...

    def lag_seconds(self) -> dict[str, float]: ...

    def clock_skew_seconds(self) -> float | None: ...


class DaemonStatus:
    """Ready means data is flowing and will keep flowing without a human:

    * the daemon has not stopped on a fatal error, and is not shutting down;
    * a StrongDM API call has succeeded with the configured key;
    * no sink has failed. A sink that is retrying within its limits is *recovering* and
      still ready: one 503 must not flap a Kubernetes endpoint. It turns failed after
      ``retry.unhealthy_after`` of continuous failure, or at once on a fatal error;
    * every stream's lag (now minus its watermark) is at most ``[metrics] max_lag``.
    """

    def __init__(
        self,
        engine: EngineView,
        max_lag: float,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.engine = engine
        self.max_lag = max_lag
        self._stopping = stopping
        self.fatal_error: str | None = None
        self.credentials_rejected = False

    def stopped_by(self, exc: BaseException) -> None:
        """Record the error the daemon stopped on; it stays visible until the process exits."""
        self.fatal_error = redact(str(exc) or type(exc).__name__)
        self.credentials_rejected = isinstance(exc, AuthenticationFailed)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        reasons: list[str] = []
        if self.fatal_error is not None:
            reasons.append(f"stopped on an error: {self.fatal_error}")
        elif self._stopping():
            reasons.append("shutting down")
        authenticated = self.engine.authenticated and not self.credentials_rejected
        if not authenticated and self.fatal_error is None:
            reasons.append("no successful call to the StrongDM API yet")
        sinks: dict[str, dict[str, Any]] = {}
        for name, health in sorted(self.engine.sink_health().items()):
            sinks[name] = {
                "state": health.state.value,
                "error": health.last_error,
                "since": round(health.since, 3),
                "retries": health.retries,
            }
            if health.state is SinkState.FAILED:
                reasons.append(f"sink {name} failed: {health.last_error}")
        lag = {stream: round(seconds, 3) for stream, seconds in sorted(self.engine.lag_seconds().items())}
        behind = {stream: seconds for stream, seconds in lag.items() if seconds > self.max_lag}
        for stream, seconds in behind.items():
            reasons.append(f"stream {stream} is {seconds:.0f}s behind (max_lag {self.max_lag:g}s)")
        body = {
            "ready": not reasons,
            "reasons": reasons,
            "authenticated": authenticated,
            "sinks": sinks,
            "max_lag_seconds": self.max_lag,
            "lag_seconds": lag,
        }
        return not reasons, scrub(body)

    def snapshot(self) -> StatusSnapshot:
        ready, body = self.readiness()
        lag = self.engine.lag_seconds()
        states = self.engine.states
        watermarks = {s: states[s].watermark_ns / NANOS_PER_SECOND for s in lag if s in states}
        return StatusSnapshot(
            watermarks=watermarks,
            lag=lag,
            sinks={name: info["state"] for name, info in body["sinks"].items()},
            ready=ready,
            authenticated=body["authenticated"],
            credentials_rejected=self.credentials_rejected,
            clock_skew=self.engine.clock_skew_seconds(),
        )
