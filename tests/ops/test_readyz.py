"""/readyz and /healthz against a real HTTP sink whose receiver goes away and comes back."""

from __future__ import annotations

from tests.e2e.support import daemon_config
from tests.helpers import async_wait_until
from tests.ops.support import running_daemon, scrape_registry, with_metrics_listen
from tests.peers.http_receiver import HttpReceiver


def http_sink(receiver: HttpReceiver) -> dict:
    return {
        "type": "http",
        "name": "siem",
        "url": receiver.url,
        "timeout": "1s",
        "retry": {"initial": "50ms", "maximum": "100ms", "unhealthy_after": "1s"},
    }


async def test_readyz_follows_a_sink_going_down_and_coming_back(make_emulator, tmp_path):
    emu = await make_emulator(records=50, live=20)  # live traffic: there is always a batch to send
    receiver = HttpReceiver()
    await receiver.start()
    config = with_metrics_listen(
        daemon_config(emu, tmp_path, streams={"include": ["activities"]}, sinks=[http_sink(receiver)]),
        max_lag=3600.0,
    )
    before = scrape_registry()
    try:
        async with running_daemon(config) as daemon:
            status, body = await daemon.healthz()
            assert status == 200 and body["ok"] is True

            async def ready():
                status, body = await daemon.readyz()
                return body if status == 200 else None

            body = await async_wait_until(ready, 30, "ready once caught up")
            assert body["reasons"] == [] and body["authenticated"] is True
            assert body["sinks"]["siem"]["state"] == "ok"

            await receiver.stop()
            seen: list[tuple[int, str]] = []  # (/readyz status, sink state) while it is down

            async def not_ready():
                status, body = await daemon.readyz()
                seen.append((status, body["sinks"]["siem"]["state"]))
                return body if status == 503 else None

            body = await async_wait_until(not_ready, 20, "not ready while the receiver is down")
            assert body["sinks"]["siem"]["state"] == "failed"
            assert [r for r in body["reasons"] if r.startswith("sink siem failed")], body["reasons"]
            # Retrying within its limits is recovering, not failed: still ready then.
            assert (200, "retrying") in seen, seen
            assert all(status == 200 for status, state in seen if state == "retrying"), seen

            down = await daemon.scrape()
            assert down.value("auditstream_sink_state", sink="siem", state="failed") == 1
            assert down.value("auditstream_sink_state", sink="siem", state="ok") == 0
            assert down.value("auditstream_ready") == 0
            # Nothing can be delivered, so the watermark stands still while time goes on: the
            # lag, computed at each scrape, rises, and the fetched batches queue up.
            lag_down = down.value("auditstream_checkpoint_lag_seconds", stream="activities")

            async def lag_rose():
                scrape = await daemon.scrape()
                return scrape.value("auditstream_checkpoint_lag_seconds", stream="activities") > lag_down + 1

            await async_wait_until(lag_rose, 10, "the lag to rise while the sink is down")
            queued = await async_wait_until(
                lambda: _queue_depth(daemon), 10, "batches queued behind the failed sink"
            )
            assert queued > 0

            await receiver.start()
            body = await async_wait_until(ready, 20, "ready again once the receiver is back")
            assert body["sinks"]["siem"]["state"] == "ok"
            up = await daemon.scrape()
            assert up.value("auditstream_sink_state", sink="siem", state="ok") == 1
            assert up.value("auditstream_ready") == 1
            assert up.value("auditstream_sink_retries_total", sink="siem") > before.get(
                "auditstream_sink_retries_total", sink="siem"
            )
            delivered = up.value("auditstream_records_delivered_total", stream="activities", sink="siem")
            assert (
                delivered
                - before.get("auditstream_records_delivered_total", stream="activities", sink="siem")
                > 0
            )
    finally:
        await receiver.stop()


async def _queue_depth(daemon) -> float:
    scrape = await daemon.scrape()
    return scrape.value("auditstream_queue_depth_batches", stream="activities")
