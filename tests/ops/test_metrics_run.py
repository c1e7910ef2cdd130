"""/metrics scraped while the daemon runs against the emulator: the numbers move as the run does."""

from __future__ import annotations

from auditstream import __version__
from auditstream.sdm.registry import NANOS_PER_SECOND
from tests.e2e.support import daemon_config
from tests.helpers import async_wait_until
from tests.ops.support import running_daemon, scrape_registry, with_metrics_listen

STREAMS = ["activities", "queries", "roles_history"]
DAY = 86_400.0


async def test_scraped_metrics_follow_the_run(make_emulator, tmp_path):
    # A token bucket of 2 refilled four times a second: the pages of the first window cannot all
    # be fetched at once, so the daemon must wait for the bucket and say so.
    emu = await make_emulator(records=500, rate_limit=240, rate_limit_burst=2)
    # One window covers the whole eight days: the lag can only fall once all its pages are in.
    config = with_metrics_listen(daemon_config(emu, tmp_path, streams={"include": STREAMS, "slice": "9d"}))
    truth = {stream: len(emu.truth(stream)) for stream in STREAMS}
    assert all(truth.values())

    before = scrape_registry()  # counters are per process: other tests may have moved them
    async with running_daemon(config) as daemon:
        first = await daemon.scrape()
        # start_at is eight days back: until the window's five pages are in (three of them
        # wait for tokens, 0.75 s at least), activities is that far behind.
        assert first.value("auditstream_checkpoint_lag_seconds", stream="activities") > 7 * DAY
        assert first.value("auditstream_ready") == 0
        assert first.total("auditstream_build_info", version=__version__) == 1
        delivered_before = {
            s: before.get("auditstream_records_delivered_total", stream=s, sink="out") for s in STREAMS
        }
        fetched_before = {s: before.get("auditstream_records_fetched_total", stream=s) for s in STREAMS}
        waits_before = before.total("auditstream_rate_limit_waits_total")
        wait_seconds_before = before.total("auditstream_rate_limit_wait_seconds_total")
        ok_before = before.total("auditstream_api_requests_total", code="OK")

        async def caught_up():
            scrape = await daemon.scrape()
            done = all(
                scrape.value("auditstream_records_delivered_total", stream=s, sink="out")
                - delivered_before[s]
                >= truth[s]
                for s in STREAMS
            )
            lag_low = all(scrape.value("auditstream_checkpoint_lag_seconds", stream=s) < 60 for s in STREAMS)
            return scrape if done and lag_low else None

        last = await async_wait_until(caught_up, 60, "every record delivered and the lag below a minute")

        for stream in STREAMS:
            delivered = last.value("auditstream_records_delivered_total", stream=stream, sink="out")
            fetched = last.value("auditstream_records_fetched_total", stream=stream)
            assert delivered - delivered_before[stream] == truth[stream], stream  # exactly once
            assert fetched - fetched_before[stream] >= truth[stream], stream
            watermark = last.value("auditstream_checkpoint_watermark_timestamp_seconds", stream=stream)
            state = daemon.engine.states[stream]
            assert watermark == state.watermark_ns / NANOS_PER_SECOND
            assert last.value("auditstream_last_delivery_timestamp_seconds", stream=stream) > 0
        assert last.total("auditstream_api_requests_total", code="OK") > ok_before
        # The emulator limited us: waits were counted, with their duration, per bucket.
        assert last.total("auditstream_rate_limit_waits_total") > waits_before
        assert last.total("auditstream_rate_limit_wait_seconds_total") > wait_seconds_before
        assert last.value("auditstream_rate_limit_waits_total", bucket="read") > 0
        assert ("auditstream_rate_limit_remaining", frozenset({("bucket", "read")})) in last.samples
        assert last.value("auditstream_sink_state", sink="out", state="ok") == 1
        assert last.value("auditstream_api_authenticated") == 1
        assert last.value("auditstream_ready") == 1
        assert last.total("auditstream_sink_batch_duration_seconds_count", sink="out") > 0
