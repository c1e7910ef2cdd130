"""Our client against the emulator: signed, paged, retried, rate limited, TLS."""

from __future__ import annotations

import asyncio
import base64
import collections
import time
from typing import Any

import pytest

from auditstream.emulator import Emulator, EmulatorOptions, Order
from auditstream.sdm.client import AuditClient, ClientSettings
from auditstream.sdm.errors import AuthenticationFailed, TlsVerificationFailed, TransientApiError
from auditstream.sdm.observer import ApiObserver
from auditstream.sdm.registry import DEFAULT_STREAM_NAMES, STREAMS
from tests.e2e.support import client_settings
from tests.peers.tls import make_pki

S = 1_000_000_000
EVERYTHING = (0, 2**62)


# Small pages and quick retries: many calls, and a fault costs little time.
CLIENT: dict[str, Any] = dict(
    page_size=40, timeout=2.0, max_transient_retries=8, retry_initial=0.01, retry_max=0.05
)


def settings(emu: Emulator, **overrides: Any) -> ClientSettings:
    return client_settings(emu, **(CLIENT | overrides))


async def full_listing(client: AuditClient, stream: str) -> collections.Counter[str]:
    spec = STREAMS[stream]
    keys: collections.Counter[str] = collections.Counter()
    async for record in client.list(spec, *EVERYTHING):
        keys[spec.record_key(record)] += 1
    return keys


async def test_every_record_of_every_stream_exactly_once_with_faults_and_rate_limits():
    options = EmulatorOptions(
        seed=11,
        records=300,
        fault_rate=0.25,
        slow_fault_seconds=0.2,
        rate_limit=1200,
        rate_limit_burst=5,
        short_pages=0.3,
        order=Order.UNORDERED,
        max_page_size=50,
    )
    async with Emulator(options) as emu:
        refused_before = emu.stats.rate_limited
        # Two clients with separate gates compete for one key's budget: some calls are refused.
        async with AuditClient(settings(emu)) as first, AuditClient(settings(emu)) as second:
            clients = [first, second]
            results = await asyncio.gather(
                *(full_listing(clients[i % 2], name) for i, name in enumerate(DEFAULT_STREAM_NAMES))
            )
        for name, keys in zip(DEFAULT_STREAM_NAMES, results, strict=True):
            truth = {key for key, _ in emu.truth(name)}
            assert set(keys) == truth, name
            assert all(n == 1 for n in keys.values()), f"{name}: duplicates in one listing"
        assert emu.stats.faults_injected > 0
        assert emu.stats.rate_limited > refused_before, "the budget really ran out"


class WaitCounter(ApiObserver):
    def __init__(self) -> None:
        self.waits: collections.Counter[str] = collections.Counter()

    def rate_limit_wait(self, bucket: str, seconds: float) -> None:
        self.waits[bucket] += 1


async def test_rate_limit_wait_is_shared_and_counted():
    async with Emulator(EmulatorOptions(records=100, rate_limit=600, rate_limit_burst=5)) as emu:
        observer = WaitCounter()
        async with AuditClient(
            settings(emu, page_size=5, max_rate_limit_wait=2.0), observer=observer
        ) as client:
            started = time.monotonic()
            counts = await asyncio.gather(*(full_listing(client, s) for s in ("activities", "queries")))
            elapsed = time.monotonic() - started
        assert [sum(c.values()) for c in counts] == [len(emu.truth("activities")), len(emu.truth("queries"))]
        assert observer.waits["read"] > 0, "the waits are reported, on the bucket the API named"
        assert elapsed > 2.0, "40 pages at 10/s after a burst of 5 cannot be listed without waiting"


async def test_wrong_secret_names_the_access_key_not_the_secret():
    wrong = base64.b64encode(b"definitely-not-the-right-secret").decode()
    async with (
        Emulator(EmulatorOptions(records=10)) as emu,
        AuditClient(settings(emu, secret_key=wrong)) as client,
    ):
        with pytest.raises(AuthenticationFailed) as err:
            await full_listing(client, "activities")
    message = str(err.value)
    assert emu.options.access_key in message and "secret_key" in message
    assert wrong not in message


async def test_deadline_exceeded_is_retried_then_reported():
    async with Emulator(EmulatorOptions(records=10, latency_ms=400)) as emu:
        async with AuditClient(settings(emu, timeout=0.1, max_transient_retries=2)) as client:
            with pytest.raises(TransientApiError, match="DEADLINE_EXCEEDED"):
                await full_listing(client, "activities")
        assert emu.stats.requests_total["activities"] >= 3, "the first try and two retries"


async def test_tls_verified_with_the_ca_and_refused_without_it(tmp_path):
    pki = make_pki(tmp_path, host="localhost")
    options = EmulatorOptions(records=20, tls_cert_file=str(pki.cert_file), tls_key_file=str(pki.key_file))
    async with Emulator(options) as emu:
        endpoint = f"localhost:{emu.port}"
        async with AuditClient(
            settings(emu, endpoint=endpoint, insecure=False, ca_file=pki.ca_file)
        ) as client:
            assert sum((await full_listing(client, "activities")).values()) == len(emu.truth("activities"))
        async with AuditClient(settings(emu, endpoint=endpoint, insecure=False)) as client:
            with pytest.raises(TlsVerificationFailed, match=r"ca_file"):
                await full_listing(client, "activities")
        assert emu.stats.requests_total["activities"] == 1, "the untrusted attempt never reached the API"


async def test_a_page_knows_its_size_on_the_wire():
    """What the engine's buffer bound counts (engine.prefetch): the response as received."""
    async with Emulator(EmulatorOptions(seed=12, records=100)) as emu, AuditClient(settings(emu)) as client:
        spec = STREAMS["activities"]
        async for page in client.pages(spec, *EVERYTHING):
            response = spec.response_class()
            getattr(response, spec.records_field).extend(page.records)
            records_only = response.ByteSize()
            assert records_only < page.size_bytes < records_only + 512, "the records, meta and rate limit"
