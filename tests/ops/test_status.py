"""Readiness rules and the scrape-time gauges, on a stub engine and a real one with a fake clock."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from auditstream.engine.checkpoint import StreamState
from auditstream.engine.engine import Engine, RunPlan
from auditstream.ops.metrics import StatusCollector, StatusSnapshot
from auditstream.ops.status import DaemonStatus
from auditstream.sdm.errors import AuthenticationFailed, TlsVerificationFailed
from auditstream.sinks.base import SinkHealth, SinkState
from tests.e2e.support import S, daemon_config
from tests.ops.support import parse_metrics


@dataclass
class StubEngine:
    authenticated: bool = True
    states: dict[str, StreamState] = field(default_factory=dict)
    health: dict[str, SinkHealth] = field(default_factory=dict)
    lag: dict[str, float] = field(default_factory=dict)

    def sink_health(self) -> dict[str, SinkHealth]:
        return self.health

    def lag_seconds(self) -> dict[str, float]:
        return self.lag

    def clock_skew_seconds(self) -> float | None:
        return None


def sink(state: SinkState, error: str | None = None) -> SinkHealth:
    health = SinkHealth()
    health.mark(state, error)
    return health


def test_ready_when_authenticated_sinks_fine_and_lag_low():
    engine = StubEngine(health={"a": sink(SinkState.OK)}, lag={"activities": 12.0})
    ok, body = DaemonStatus(engine, max_lag=600).readiness()
    assert ok and body["ready"] and body["reasons"] == []
    assert body["sinks"]["a"]["state"] == "ok" and body["lag_seconds"] == {"activities": 12.0}


def test_a_retrying_sink_is_recovering_and_still_ready():
    engine = StubEngine(health={"a": sink(SinkState.RETRYING, "HTTP 503")})
    ok, body = DaemonStatus(engine, max_lag=600).readiness()
    assert ok, body
    assert body["sinks"]["a"] == {**body["sinks"]["a"], "state": "retrying", "error": "HTTP 503"}


@pytest.mark.parametrize(
    ("engine", "reason"),
    [
        (StubEngine(authenticated=False), "no successful call to the StrongDM API yet"),
        (
            StubEngine(health={"siem": sink(SinkState.FAILED, "token rejected")}),
            "sink siem failed: token rejected",
        ),
        (StubEngine(lag={"queries": 601.0}), "stream queries is 601s behind (max_lag 600s)"),
    ],
)
def test_not_ready_says_why(engine, reason):
    ok, body = DaemonStatus(engine, max_lag=600).readiness()
    assert not ok and body["reasons"] == [reason]


def test_shutting_down_and_stopped_on_an_error_are_not_ready():
    engine = StubEngine()
    status = DaemonStatus(engine, max_lag=600, stopping=lambda: True)
    assert status.readiness()[1]["reasons"] == ["shutting down"]
    status.stopped_by(TlsVerificationFailed("TLS with api failed"))
    assert status.readiness()[1]["reasons"] == ["stopped on an error: TLS with api failed"]
    assert not status.credentials_rejected


def test_a_rejected_key_is_reported_as_such():
    status = DaemonStatus(StubEngine(), max_lag=600)
    status.stopped_by(AuthenticationFailed("the StrongDM API rejected access key 'k'"))
    ok, body = status.readiness()
    assert not ok and body["authenticated"] is False
    snapshot = status.snapshot()
    assert snapshot.credentials_rejected and not snapshot.authenticated and not snapshot.ready


def scrape(snapshot: StatusSnapshot):
    registry = CollectorRegistry()
    collector = StatusCollector()
    registry.register(collector)
    assert parse_metrics(generate_latest(registry).decode()).samples == {}  # no daemon, no series
    collector.set_source(lambda: snapshot)
    return parse_metrics(generate_latest(registry).decode())


def test_collector_exports_the_snapshot():
    result = scrape(
        StatusSnapshot(
            watermarks={"activities": 1700000000.5},
            lag={"activities": 42.0},
            sinks={"siem": "retrying"},
            ready=True,
            authenticated=True,
        )
    )
    assert result.value("auditstream_checkpoint_lag_seconds", stream="activities") == 42.0
    watermark = result.value("auditstream_checkpoint_watermark_timestamp_seconds", stream="activities")
    assert watermark == 1700000000.5
    states = [
        result.value("auditstream_sink_state", sink="siem", state=s) for s in ("ok", "retrying", "failed")
    ]
    assert states == [0, 1, 0]
    assert result.value("auditstream_ready") == 1
    assert result.value("auditstream_api_authenticated") == 1
    assert result.value("auditstream_api_credentials_rejected") == 0


def test_lag_rises_while_nothing_moves(tmp_path):
    """The lag is now minus the watermark at each scrape: a stuck daemon shows it growing
    although no window completes (a gauge set on completion would stay put)."""

    class FakeEmu:
        address = "127.0.0.1:1"

        class options:
            access_key = "key"
            secret_key = "c2VjcmV0LXNlY3JldA=="

    config = daemon_config(FakeEmu(), tmp_path, streams={"include": ["activities"]})
    now = [1_800_000_000 * S]
    plan = RunPlan(streams=["activities"], checkpoint_path=config.checkpoint.path)
    engine = Engine(config, plan, clock=lambda: now[0])
    engine.states["activities"] = StreamState(watermark_ns=now[0] - 30 * S)
    status = DaemonStatus(engine, max_lag=600)
    assert status.snapshot().lag == {"activities": 30.0}
    now[0] += 600 * S
    snapshot = status.snapshot()
    assert snapshot.lag == {"activities": 630.0}
    assert snapshot.watermarks == {"activities": 1_800_000_000 - 30}
    assert not snapshot.ready


async def test_a_taken_metrics_port_is_said_with_the_key_and_the_way_out():
    import socket

    from auditstream.ops.server import start_server

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(OSError) as err:
            await start_server(DaemonStatus(StubEngine(), max_lag=600), listen)
    said = str(err.value)
    assert said.startswith(f"cannot listen on [metrics] listen = '{listen}' (Address already in use)"), said
    assert "set another [metrics] listen" in said and "[Errno" not in said
