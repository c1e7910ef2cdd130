"""``auditstream backfill`` into Microsoft Sentinel (azure_monitor), Elasticsearch and Datadog at
once, each a strict stand-in of the vendor's API (tests/peers/azure.py, elastic.py, datadog.py)
over TLS with a private CA, configured with every key the sinks have: every record of
activities, queries and two history streams arrives at each, compared with the emulator's
ground truth: 0 missing, 0 duplicated; every Elasticsearch document has ``@timestamp``.

Then a crash: the backfill is SIGKILLed while it delivers and run again; nothing is missing
anywhere, and Elasticsearch holds every record once, the re-delivered ones answered 409.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import datetime as dt
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditstream.emulator import EmulatorOptions, running_emulator
from tests.e2e.support import truth_keys, write_daemon_config
from tests.helpers import async_wait_until
from tests.peers import tls as test_tls
from tests.peers.azure import EntraReceiver, LogsIngestionReceiver
from tests.peers.datadog import DatadogReceiver
from tests.peers.elastic import ElasticReceiver

STREAMS = ["activities", "queries", "roles_history", "accounts_history"]
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT = "9f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f"
CLIENT_SECRET = "Qx8Q~backfill-client-SECRET-0123456789"
DCR = "dcr-00112233445566778899aabbccddeeff"
ES_KEY_ID, ES_KEY = "auditstream-writer", "es-api-key-SECRET-0123456789"
DD_KEY = "dd-api-key-SECRET-0123456789abcdef"
PIPELINE = "strongdm-audit"
Counts = collections.Counter[tuple[str, str]]


@dataclass
class Peers:
    pki: test_tls.TestPki
    entra: EntraReceiver
    ingestion: LogsIngestionReceiver
    elastic: ElasticReceiver
    datadog: DatadogReceiver

    def sentinel_rows(self) -> Counts:
        return collections.Counter((row["logType"], row["id"]) for _, row in self.ingestion.rows)

    def elastic_docs(self) -> Counts:
        return collections.Counter((doc["logType"], doc["id"]) for doc in self.elastic.docs.values())

    def datadog_logs(self) -> Counts:
        return collections.Counter((event["logType"], event["id"]) for event in self.datadog.events)


@contextlib.asynccontextmanager
async def siem_peers(tmp_path: Path) -> AsyncIterator[Peers]:
    pki = test_tls.make_pki(tmp_path / "pki")
    entra = EntraReceiver(tenant_id=TENANT, apps={CLIENT: CLIENT_SECRET}, ssl_context=pki.server_context())
    dcr_streams = {f"Custom-StrongDM_{stream}" for stream in STREAMS}
    ingestion = LogsIngestionReceiver(entra=entra, dcrs={DCR: dcr_streams}, ssl_context=pki.server_context())
    ingestion.grant(CLIENT, DCR)
    elastic = ElasticReceiver(api_keys={ES_KEY_ID: ES_KEY}, ssl_context=pki.server_context())
    elastic.pipelines.add(PIPELINE)
    datadog = DatadogReceiver(api_key=DD_KEY, ssl_context=pki.server_context())
    async with entra, ingestion, elastic, datadog:
        yield Peers(pki, entra, ingestion, elastic, datadog)


def secret_file(tmp_path: Path, name: str, value: str) -> str:
    path = tmp_path / "secrets" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(value + "\n")
    return str(path)


def sinks(peers: Peers, tmp_path: Path) -> list[dict[str, Any]]:
    """The three sinks with every key they have."""
    tls = {"ca_file": str(peers.pki.ca_file)}
    retry = {"initial": "0.1s", "maximum": "2s", "max_elapsed": "0s", "unhealthy_after": "60s"}
    dead = tmp_path / "dead-letter"
    api_key = base64.b64encode(f"{ES_KEY_ID}:{ES_KEY}".encode()).decode()
    return [
        {
            "type": "azure_monitor",
            "name": "sentinel",
            "endpoint": peers.ingestion.base_url,
            "dcr_immutable_id": DCR,
            "stream_name": "Custom-StrongDM_{stream}",
            "tenant_id": TENANT,
            "client_id": CLIENT,
            "client_secret_file": secret_file(tmp_path, "entra-client-secret", CLIENT_SECRET),
            "authority_host": peers.entra.base_url,
            "format": "json",
            "streams": STREAMS,
            "batch": {"max_events": 500, "max_bytes": 1_000_000, "max_age": "0s"},
            "retry": retry,
            "tls": tls,
            "dead_letter_path": str(dead / "sentinel.jsonl"),
        },
        {
            "type": "elasticsearch",
            "name": "elastic",
            "urls": [peers.elastic.base_url],
            "data_stream": "logs-strongdm.{stream}-default",
            "api_key_file": secret_file(tmp_path, "elastic-api-key", api_key),
            "pipeline": PIPELINE,
            "format": "json",
            "streams": STREAMS,
            "batch": {"max_events": 500, "max_bytes": 5_000_000, "max_age": "0s"},
            "retry": retry,
            "tls": tls,
            "dead_letter_path": str(dead / "elastic.jsonl"),
        },
        {
            "type": "datadog",
            "name": "datadog",
            "site": "datadoghq.eu",
            "endpoint_url": peers.datadog.base_url,
            "api_key_file": secret_file(tmp_path, "datadog-api-key", DD_KEY),
            "service": "strongdm-audit",
            "source": "strongdm",
            "tags": ["env:test", "stream:{stream}"],
            "format": "json",
            "streams": STREAMS,
            "batch": {"max_events": 1000, "max_bytes": 4_000_000, "max_age": "0s"},
            "retry": retry,
            "tls": tls,
            "dead_letter_path": str(dead / "datadog.jsonl"),
        },
    ]


async def backfill(config: Path, since: dt.datetime, until: dt.datetime, env: dict[str, str], log: Path):
    with log.open("ab") as err:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "auditstream.cli",
            "backfill",
            "--config",
            str(config),
            "--from",
            since.isoformat(),
            "--to",
            until.isoformat(),
            "--streams",
            ",".join(STREAMS),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=err,
            env=env,
        )


def tls_environment(peers: Peers) -> dict[str, str]:
    """The private CA is also where libraries that read the environment look for one."""
    return {
        **os.environ,
        "SSL_CERT_FILE": str(peers.pki.ca_file),
        "REQUESTS_CA_BUNDLE": str(peers.pki.ca_file),
    }


def assert_each_record_once(truth: set[tuple[str, str]], delivered: Counts, name: str) -> None:
    missing = truth - set(delivered)
    duplicated = {k: n for k, n in delivered.items() if n > 1}
    unexpected = set(delivered) - truth
    assert not missing, f"{name}: {len(missing)} missing, e.g. {sorted(missing)[:3]}"
    assert not duplicated, f"{name}: {len(duplicated)} duplicated, e.g. {sorted(duplicated)[:3]}"
    assert not unexpected, f"{name}: {len(unexpected)} records the emulator never served"


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


async def test_backfill_delivers_every_record_once_to_sentinel_elasticsearch_and_datadog(tmp_path):
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=8)
    until = dt.datetime.now(dt.UTC)
    log = tmp_path / "backfill.log"
    with running_emulator(EmulatorOptions(seed=18, records=3000)) as emu:
        async with siem_peers(tmp_path) as peers:
            config = write_daemon_config(emu, tmp_path, sinks=sinks(peers, tmp_path))
            proc = await backfill(config, since, until, tls_environment(peers), log)
            code = await asyncio.wait_for(proc.wait(), timeout=600)
            assert code == 0, tail(log)
            truth = truth_keys(emu, STREAMS)
            delivered = {
                "azure_monitor": peers.sentinel_rows(),
                "elasticsearch": peers.elastic_docs(),
                "datadog": peers.datadog_logs(),
            }
            # auditstream check: a token, GET / and _has_privileges, the key validated; no event
            peers.ingestion.publishers.clear()  # and a missing role is named
            rows_before = len(peers.ingestion.rows)
            check = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "auditstream.cli",
                "check",
                "--config",
                str(config),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=tls_environment(peers),
            )
            out, _ = await asyncio.wait_for(check.communicate(), timeout=120)
            assert len(peers.ingestion.rows) == rows_before
            documents = list(peers.elastic.docs.items())
            rows = [row for _, row in peers.ingestion.rows]
            entries = peers.datadog.entries

    assert len(truth) == 2 * 3000 + 2 * 300, "activities, queries and two history streams"
    for name, counts in delivered.items():
        assert_each_record_once(truth, counts, name)
    for (index, _), doc in documents:
        assert doc["@timestamp"].endswith("Z") and index == f"logs-strongdm.{doc['logType']}-default"
    assert all("TimeGenerated" in row for row in rows)
    assert {entry["ddtags"] for entry in entries} == {f"env:test,stream:{s}" for s in STREAMS}
    assert not (tmp_path / "dead-letter").exists() or not list((tmp_path / "dead-letter").iterdir())
    assert f"backfill complete: {len(truth):,} records" in tail(log)
    lines = out.decode().splitlines()
    assert check.returncode == 1, lines
    (sentinel,) = [line for line in lines if "sink sentinel" in line]
    assert sentinel.startswith("FAIL") and "Monitoring Metrics Publisher" in sentinel
    assert any(line.startswith("ok") and "sink elastic" in line and "create_doc" in line for line in lines)
    assert any(line.startswith("ok") and "sink datadog" in line and "API key valid" in line for line in lines)
    for secret in (CLIENT_SECRET, ES_KEY, DD_KEY):
        assert secret not in log.read_text() and secret not in out.decode()


async def test_a_backfill_killed_while_delivering_resumes_with_nothing_missing_and_no_duplicate_in_elastic(
    tmp_path,
):
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=8)
    until = dt.datetime.now(dt.UTC)
    log = tmp_path / "backfill.log"
    with running_emulator(EmulatorOptions(seed=19, records=3000)) as emu:
        async with siem_peers(tmp_path) as peers:
            # Datadog answers slowly: Elasticsearch has indexed batches whose checkpoint waits
            # for Datadog when the kill lands, so the resumed backfill sends them again.
            peers.datadog.faults.delay = 0.15
            config = write_daemon_config(emu, tmp_path, sinks=sinks(peers, tmp_path))
            env = tls_environment(peers)
            proc = await backfill(config, since, until, env, log)
            await async_wait_until(
                lambda: len(peers.elastic.docs) >= 2000 or proc.returncode is not None, 120, "deliveries"
            )
            assert proc.returncode is None, f"the backfill ended before the kill:\n{tail(log)}"
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            killed_at = len(peers.elastic.docs)
            peers.datadog.faults.delay = 0
            proc = await backfill(config, since, until, env, log)
            code = await asyncio.wait_for(proc.wait(), timeout=600)
            assert code == 0, tail(log)
            truth = truth_keys(emu, STREAMS)
            elastic = peers.elastic_docs()
            sentinel = peers.sentinel_rows()
            datadog = peers.datadog_logs()
            conflicts = peers.elastic.conflicts

    assert killed_at < len(truth), "the kill landed before the end"
    assert_each_record_once(truth, elastic, "elasticsearch")
    assert conflicts > 0, "records indexed before the kill were sent again and answered 409"
    for name, counts in (("azure_monitor", sentinel), ("datadog", datadog)):
        assert not truth - set(counts), f"{name}: {len(truth - set(counts))} missing"
    assert json.dumps(sorted(elastic)) == json.dumps(sorted(truth))
