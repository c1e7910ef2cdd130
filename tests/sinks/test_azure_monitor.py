"""The azure_monitor sink against strict Entra ID and Logs Ingestion stand-ins
(tests/peers/azure.py), over TLS with a private CA: rows and TimeGenerated, the token (secret,
workload identity, cache, refresh), 1 MB calls, throttling, refusals, check."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as examples
from hypothesis import strategies as st
from pydantic import ValidationError

from auditstream.ops.secrets import REDACTED, redact
from auditstream.sinks.azure_monitor import (
    MAX_CALL_BYTES,
    AzureMonitorSink,
    AzureMonitorSinkSettings,
    plan_calls,
)
from auditstream.sinks.base import Envelope, SinkFatalError, SinkState
from auditstream.sinks.observer import SinkObserver
from auditstream.sinks.siem import record_time
from tests.helpers import async_wait_until
from tests.peers.azure import EntraReceiver, LogsIngestionReceiver
from tests.peers.tinyproxy import Tinyproxy
from tests.peers.tls import make_pki
from tests.sinks.conftest import AWKWARD, FAST_RETRY, assert_delivered, envelopes, logged

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT = "9f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f"
SECRET = "Qx8Q~azure-client-SECRET-0123456789"
DCR = "dcr-00112233445566778899aabbccddeeff"
STREAM = "Custom-StrongDMAudit"


class Peers:
    def __init__(self, pki, **entra: Any) -> None:
        self.pki = pki
        self.entra = EntraReceiver(
            tenant_id=TENANT, apps={CLIENT: SECRET}, ssl_context=pki.server_context(), **entra
        )
        self.ingestion = LogsIngestionReceiver(
            entra=self.entra,
            dcrs={DCR: {STREAM, "Custom-StrongDM_activities", "Custom-StrongDM_queries"}},
            ssl_context=pki.server_context(),
        )
        self.ingestion.grant(CLIENT, DCR)

    def settings(self, **overrides: Any) -> AzureMonitorSinkSettings:
        config: dict[str, Any] = {
            "type": "azure_monitor",
            "name": "sentinel",
            "endpoint": self.ingestion.base_url,
            "dcr_immutable_id": DCR,
            "stream_name": STREAM,
            "tenant_id": TENANT,
            "client_id": CLIENT,
            "client_secret": SECRET,
            "authority_host": self.entra.base_url,
            "retry": FAST_RETRY,
            "tls": {"ca_file": str(self.pki.ca_file)},
        }
        config.update(overrides)
        return AzureMonitorSinkSettings.model_validate(config)

    def events(self) -> list[list[dict[str, Any]]]:
        return [
            [{k: v for k, v in row.items() if k != "TimeGenerated"} for row in r]
            for r in self.ingestion.requests
        ]


@pytest.fixture
async def peers(tmp_path):
    pki = make_pki(tmp_path / "pki")
    found = Peers(pki)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(found.entra)
        await stack.enter_async_context(found.ingestion)
        yield found


async def started(config: AzureMonitorSinkSettings, state_dir, observer=None) -> AzureMonitorSink:
    sink = AzureMonitorSink(config, state_dir=state_dir, observer=observer)
    await sink.start()
    return sink


class Retries(SinkObserver):
    def __init__(self) -> None:
        self.errors: list[str] = []

    def retried(self, sink: str, error: str) -> None:
        self.errors.append(error)


async def test_each_row_is_the_event_with_time_generated(peers, state_dir):
    sink = await started(peers.settings(), state_dir)
    batch = envelopes("activities", 3) + envelopes("queries", 2)
    await sink.send(batch)
    await sink.close()
    rows = [row for _, row in peers.ingestion.rows]
    assert rows[0] == {"TimeGenerated": "2024-05-01T12:00:00.1234567Z", **batch[0].event}
    assert rows[0]["message"] == AWKWARD
    assert_delivered(peers.events(), batch, allow_retried_copies=False)
    assert len(peers.entra.token_requests) == 1
    (form,) = peers.entra.token_requests
    assert (
        form["scope"] == "https://monitor.azure.com/.default" and form["grant_type"] == "client_credentials"
    )


async def test_the_token_is_cached_and_a_new_one_is_fetched_once_it_expires(peers, state_dir):
    sink = await started(peers.settings(), state_dir)
    for start in range(0, 40, 10):
        await sink.send(envelopes("activities", 10, start=start))
    assert len(peers.entra.token_requests) == 1  # one token for four calls
    await sink.close()
    peers.entra.tokens.clear()  # the first token is revoked; the next lives three seconds
    peers.entra.expires_in = 3
    sink = await started(peers.settings(), state_dir)
    await sink.send(envelopes("activities", 10, start=40))
    first = min(token.expires_at for token in peers.entra.tokens.values())
    await async_wait_until(lambda: time.time() > first + 0.1, 10, "the token to expire")
    await sink.send(envelopes("activities", 10, start=50))  # the ingestion refuses expired tokens
    await sink.close()
    assert len(peers.entra.token_requests) == 3
    assert 401 not in peers.ingestion.refused
    assert len(peers.ingestion.rows) == 60


async def test_a_request_over_1_mb_becomes_calls_of_at_most_1_mb(peers, state_dir):
    config = peers.settings(batch={"max_events": 10_000, "max_bytes": 8_000_000})
    sink = await started(config, state_dir)
    batch = envelopes("activities", 700, pad="é" * 2_000)  # 4 KB of JSON each: about 3 MB
    await sink.send(batch)
    await sink.close()
    assert len(peers.ingestion.call_sizes) >= 3
    assert all(raw <= 1_048_576 and inflated <= 1_048_576 for raw, inflated in peers.ingestion.call_sizes)
    assert peers.ingestion.refused == []
    assert_delivered(peers.events(), batch, allow_retried_copies=False)


def rows_summing_to(total: int, count: int) -> list[Envelope]:
    """``count`` events whose rows, as ``json.dumps`` writes each (what the SDK sums to cut
    its 1 MiB calls), add up to exactly ``total`` bytes."""
    each, extra = divmod(total, count)
    batch = []
    for envelope in envelopes("activities", count, pad=""):
        row = {"TimeGenerated": record_time(envelope.time_ns, 7), **envelope.event}
        size = each + (1 if len(batch) < extra else 0)
        pad = "z" * (size - len(json.dumps(row).encode()))
        batch.append(envelope._replace(event={**envelope.event, "pad": pad}))
    return batch


async def test_rows_summing_just_under_1_mib_are_sent_without_a_refused_call(peers, state_dir):
    """The SDK sums its rows' JSON without the array's brackets and commas: 500 rows of 1 MiB
    less 500 bytes in all made a call of 1 MiB and 500 bytes, refused with 413 and halved,
    every time. The sink sizes each call's body itself, separators included."""
    config = peers.settings(batch={"max_events": 10_000, "max_bytes": 8_000_000})
    batch = rows_summing_to(1_048_576 - 500, 500)
    sink = await started(config, state_dir)
    await sink.send(batch)
    await sink.close()
    assert peers.ingestion.refused == []
    assert len(peers.ingestion.call_sizes) == 1  # compact JSON: the 500 rows fit in one call
    assert_delivered(peers.events(), batch, allow_retried_copies=False)


async def test_a_row_larger_than_a_call_is_dead_lettered_without_being_sent(peers, state_dir):
    sink = await started(peers.settings(batch={"max_events": 10, "max_bytes": 8_000_000}), state_dir)
    batch = envelopes("activities", 2) + envelopes("activities", 1, start=2, pad="z" * 1_048_576)
    await sink.send(batch)
    await sink.close()
    assert peers.ingestion.refused == [] and len(peers.ingestion.rows) == 2
    (line,) = [json.loads(x) for x in (state_dir / "dead-letter" / "sentinel.jsonl").read_text().splitlines()]
    assert line["key"] == "activities-2" and "1,048,576" in line["reason"]


async def test_throttling_is_absorbed_by_the_sdk_then_by_the_machinery(peers, state_dir):
    observer = Retries()
    sink = await started(peers.settings(), state_dir, observer)
    peers.ingestion.throttle = 1
    await sink.send(envelopes("activities", 5))
    assert observer.errors == []  # the SDK waited Retry-After and tried again by itself
    peers.ingestion.throttle = 4  # more than the SDK's attempts: the delivery machinery retries
    await sink.send(envelopes("activities", 5, start=5))
    await sink.close()
    assert len(observer.errors) == 1 and "HTTP 429" in observer.errors[0]
    assert_delivered(peers.events(), envelopes("activities", 10), allow_retried_copies=False)
    assert sink.health().state is SinkState.OK


async def test_a_row_the_service_refuses_is_isolated_and_dead_lettered(peers, state_dir):
    peers.ingestion.reject_when = lambda row: row.get("poison") is True
    sink = await started(peers.settings(), state_dir)
    batch = envelopes("activities", 6) + envelopes("activities", 1, start=6, poison=True)
    batch += envelopes("activities", 9, start=7)
    await sink.send(batch)
    await sink.close()
    assert_delivered(
        peers.events(), [e for e in batch if e.key != "activities-6"], allow_retried_copies=False
    )
    (line,) = [json.loads(x) for x in (state_dir / "dead-letter" / "sentinel.jsonl").read_text().splitlines()]
    assert (
        line["key"] == "activities-6" and "HTTP 400" in line["reason"] and "InvalidPayload" in line["reason"]
    )
    assert json.loads(line["event"])["TimeGenerated"] == "2024-05-01T12:00:00.1294567Z"


async def test_the_bearer_token_is_scrubbed_wherever_an_answer_quotes_it(peers, state_dir, caplog, capsys):
    """Entra ID's token is a credential the configuration never held: once obtained it is
    registered with the scrubber, so a gateway quoting ``Authorization`` back puts it nowhere."""
    caplog.set_level(logging.DEBUG)
    peers.ingestion.echo_authorization = True
    peers.ingestion.reject_when = lambda row: row.get("poison") is True
    peers.ingestion.faults.fail_with.extend([503] * 3)  # more than the SDK retries by itself
    observer = Retries()
    sink = await started(peers.settings(), state_dir, observer)
    await sink.send(envelopes("activities", 2) + envelopes("activities", 1, start=2, poison=True))
    await sink.close()
    (token,) = peers.entra.tokens
    reasons = (state_dir / "dead-letter" / "sentinel.jsonl").read_text()
    assert "InvalidPayload" in reasons and "Authorization: Bearer" in reasons
    assert observer.errors and "Authorization: Bearer" in observer.errors[0]
    for text in (reasons, *observer.errors, logged(caplog, capsys)):
        assert token not in text
    assert redact(f"Bearer {token}") == f"Bearer {REDACTED}"


async def test_the_token_request_and_the_upload_go_through_the_egress_proxy(peers, state_dir, tmp_path):
    ports = [peers.entra.port, peers.ingestion.port]
    with Tinyproxy(tmp_path / "proxy", ports) as proxy:
        sink = await started(peers.settings(proxy=proxy.url), state_dir)
        await sink.send(envelopes("activities", 5))
        await sink.close()
        tunnels = proxy.tunnels()
    assert len(peers.ingestion.rows) == 5
    assert set(tunnels) == {f"127.0.0.1:{port}" for port in ports}


async def test_a_proxy_asking_for_credentials_is_named_not_taken_for_entra_id(peers, state_dir, tmp_path):
    ports = [peers.entra.port, peers.ingestion.port]
    with Tinyproxy(tmp_path / "proxy", ports, ("auditstream", "pr0xy-PASSWORD-5521")) as proxy:
        config = peers.settings(proxy=proxy.url)
        probe = await AzureMonitorSink(config, state_dir=state_dir).probe()
        sink = await started(config, state_dir)
        with pytest.raises(SinkFatalError, match="HTTP 407") as failure:
            await sink.send(envelopes("activities", 2))
        await sink.close()
        config = peers.settings(
            proxy=proxy.url, proxy_username="auditstream", proxy_password="pr0xy-PASSWORD-5521"
        )
        sink = await started(config, state_dir)
        await sink.send(envelopes("activities", 2))
        await sink.close()
    assert "set proxy_username and proxy_password / proxy_password_file" in str(failure.value)
    assert not probe.ok and "HTTP 407" in probe.detail
    assert peers.entra.token_requests and len(peers.ingestion.rows) == 2


async def test_stream_name_per_audit_stream(peers, state_dir):
    sink = await started(peers.settings(stream_name="Custom-StrongDM_{stream}"), state_dir)
    await asyncio.gather(sink.send(envelopes("activities", 4)), sink.send(envelopes("queries", 3)))
    await sink.close()
    by_stream = {(stream, row["stream"]) for stream, row in peers.ingestion.rows}
    assert by_stream == {("Custom-StrongDM_activities", "activities"), ("Custom-StrongDM_queries", "queries")}


async def test_without_the_role_the_sink_stops_names_the_role_and_keeps_the_data(peers, state_dir):
    peers.ingestion.publishers.clear()
    config = peers.settings()
    probe = await AzureMonitorSink(config, state_dir=state_dir).probe()
    sink = await started(config, state_dir)
    with pytest.raises(SinkFatalError, match='"Monitoring Metrics Publisher" role on the DCR'):
        await sink.send(envelopes("activities", 5))
    assert sink.health().state is SinkState.FAILED
    assert not (state_dir / "dead-letter").exists()
    peers.ingestion.grant(CLIENT, DCR)  # the operator assigns it: the engine's next try delivers
    await sink.send(envelopes("activities", 5))
    await sink.close()
    assert not probe.ok and "Monitoring Metrics Publisher" in probe.detail
    assert len(peers.ingestion.rows) == 5


@pytest.mark.parametrize(
    ("change", "names"),
    [
        ({"client_secret": "Qx8Q~a-wrong-secret-000000000000"}, "client_secret / client_secret_file"),
        ({"client_id": "00000000-0000-0000-0000-000000000000"}, "fix client_id"),
        ({"tenant_id": "11111111-1111-1111-1111-111111111111"}, "fix tenant_id"),
    ],
)
async def test_a_refused_token_request_names_the_setting_and_leaks_nothing(
    peers, state_dir, caplog, capsys, change, names
):
    caplog.set_level(logging.DEBUG)
    config = peers.settings(**change)
    probe = await AzureMonitorSink(config, state_dir=state_dir).probe()
    sink = await started(config, state_dir)
    with pytest.raises(SinkFatalError, match="Entra ID refused the token request") as failure:
        await sink.send(envelopes("activities", 2))
    await sink.close()
    assert names in str(failure.value) and names in probe.detail and not probe.ok
    assert peers.ingestion.attempts == 0
    secret = config.client_secret.get_secret_value() if config.client_secret else ""
    for text in (str(failure.value), probe.detail, logged(caplog, capsys), repr(config)):
        assert secret not in text


async def test_an_unknown_stream_is_a_configuration_error(peers, state_dir):
    config = peers.settings(stream_name="Custom-Typo")
    probe = await AzureMonitorSink(config, state_dir=state_dir).probe()
    sink = await started(config, state_dir)
    with pytest.raises(SinkFatalError, match="check endpoint, dcr_immutable_id and stream_name"):
        await sink.send(envelopes("activities", 2))
    await sink.close()
    assert not probe.ok and "HTTP 404" in probe.detail


async def test_aks_workload_identity_without_a_secret(peers, state_dir, tmp_path, monkeypatch):
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text("eyJ-federated-service-account-token")
    peers.entra.federated[CLIENT] = "eyJ-federated-service-account-token"
    del peers.entra.apps[CLIENT]
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
    sink = await started(peers.settings(client_secret=None), state_dir)
    await sink.send(envelopes("activities", 3))
    await sink.close()
    (form,) = peers.entra.token_requests
    assert "client_secret" not in form and form["client_assertion"] == "eyJ-federated-service-account-token"
    assert len(peers.ingestion.rows) == 3


async def test_an_outage_of_the_ingestion_endpoint_loses_nothing(peers, state_dir):
    sink = await started(peers.settings(), state_dir)
    await peers.ingestion.stop()
    batch = envelopes("activities", 20)
    sending = asyncio.create_task(sink.send(batch))
    await async_wait_until(lambda: sink.health().state is SinkState.RETRYING, 20, "retrying while down")
    await peers.ingestion.start()
    await sending
    await sink.close()
    assert_delivered(peers.events(), batch, allow_retried_copies=False)


async def test_without_the_private_ca_nothing_is_sent(peers, state_dir):
    probe = await AzureMonitorSink(peers.settings(tls={}), state_dir=state_dir).probe()
    assert not probe.ok and "CERTIFICATE_VERIFY_FAILED" in probe.detail
    assert peers.entra.token_requests == []


async def test_check_gets_a_token_and_tries_the_role_without_sending_a_row(peers, state_dir):
    probe = await AzureMonitorSink(peers.settings(), state_dir=state_dir).probe()
    assert probe.ok and f"DCR {DCR}" in probe.detail
    assert len(peers.entra.token_requests) == 1 and peers.ingestion.rows == []


def test_settings_are_checked(tmp_path):
    base = {
        "name": "s",
        "type": "azure_monitor",
        "endpoint": "https://dce-x.westeurope-1.ingest.monitor.azure.com",
        "dcr_immutable_id": DCR,
        "stream_name": STREAM,
    }
    assert AzureMonitorSinkSettings.model_validate(base).scope == "https://monitor.azure.com/.default"
    gov = {**base, "endpoint": "https://dce-x.usgovvirginia-1.ingest.monitor.azure.us"}
    assert AzureMonitorSinkSettings.model_validate(gov).scope == "https://monitor.azure.us/.default"
    for change, message in (
        ({"endpoint": "http://dce.example.com"}, "https://"),
        ({"dcr_immutable_id": "/subscriptions/x/dataCollectionRules/y"}, "not a DCR immutable id"),
        ({"stream_name": "StrongDMAudit_CL"}, "not a DCR stream name"),
        ({"client_secret": SECRET}, "needs tenant_id and client_id"),
        ({"format": "cef"}, "format"),
    ):
        with pytest.raises(ValidationError, match=message):
            AzureMonitorSinkSettings.model_validate({**base, **change})


BLOCK_AZURE = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "azure" or name.startswith("azure."):
            raise ImportError(f"No module named {name!r}")
sys.meta_path.insert(0, Block())
from auditstream.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_without_the_azure_extra_the_config_error_says_how_to_install_it(tmp_path):
    from tests.e2e.support import daemon_config_document, write_toml

    doc = daemon_config_document("127.0.0.1:1", "auth-x", "AAAA", tmp_path)
    doc["sinks"] = [
        {
            "type": "azure_monitor",
            "name": "sentinel",
            "endpoint": "https://dce.example.com",
            "dcr_immutable_id": DCR,
            "stream_name": STREAM,
        }
    ]
    config = write_toml(tmp_path / "config.toml", doc)
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_AZURE, "run", "--config", str(config)], capture_output=True, timeout=60
    )
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.decode().strip().splitlines()
    assert "the azure_monitor sink needs the Azure extra: pip install 'auditstream[azure]'" in line


def test_auditstream_imports_no_azure_library_unless_such_a_sink_is_configured():
    code = (
        "import sys, auditstream.cli, auditstream.sinks.registry; "
        "print(sorted(m for m in sys.modules if m.startswith('azure')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60, check=True)
    assert proc.stdout.decode().strip() == "[]"


@given(st.lists(st.integers(min_value=1, max_value=MAX_CALL_BYTES - 2), max_size=60))
@examples(max_examples=200, deadline=None)
def test_calls_hold_every_row_once_in_order_and_never_exceed_the_limit(sizes):
    calls = plan_calls(list(range(len(sizes))), sizes)
    assert [index for call in calls for index in call] == list(range(len(sizes)))
    for number, call in enumerate(calls):
        body = 2 + sum(sizes[i] for i in call) + len(call) - 1
        assert body <= MAX_CALL_BYTES
        if number + 1 < len(calls):  # greedy: the next row would not have fitted
            assert body + 1 + sizes[calls[number + 1][0]] > MAX_CALL_BYTES
