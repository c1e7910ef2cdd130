"""Known secrets never appear in anything the daemon or ``check`` prints or serves.

The daemon runs as users run it (a subprocess, logs on a non-TTY stderr) with a secret in
every place the configuration has one: the API secret key, an HEC token from ``token_file``,
an HTTP sink's Basic password, the redaction hash key. Two runs: one whose key the API
refuses (the daemon stops and keeps serving metrics for a while), one where the HEC
receiver refuses the token while the HTTP sink delivers. Every line of output, every
/metrics and /readyz answer and ``auditstream check`` for both configurations is searched
for each secret, its base64 forms and (for the API key) what it decodes to.
"""

from __future__ import annotations

import base64
from pathlib import Path

import orjson

from tests.e2e.support import daemon_config_document
from tests.helpers import async_wait_until, free_port
from tests.ops.support import Run, parse_metrics, run_check, write_config
from tests.peers.hec import HecReceiver
from tests.peers.http_receiver import HttpReceiver

WRONG_API_SECRET_TEXT = "wrong-api-secret-4711-for-the-test"
HEC_TOKEN = "hec-token-5f0c-for-the-test"
HTTP_PASSWORD = "http-pass-9e2b-for-the-test"
HASH_KEY = "hash-key-77aa-for-the-test"


def forbidden(api_secret_b64: str) -> dict[str, str]:
    """Every secret in every form a leak could take, by a name for the failure message."""
    wrong_b64 = base64.b64encode(WRONG_API_SECRET_TEXT.encode()).decode()
    basic = base64.b64encode(f"collector:{HTTP_PASSWORD}".encode()).decode()
    found = {
        "api secret (base64, as configured)": api_secret_b64,
        "api secret (decoded)": base64.b64decode(api_secret_b64).decode("latin-1"),
        "wrong api secret (base64, as configured)": wrong_b64,
        "wrong api secret (decoded)": WRONG_API_SECRET_TEXT,
        "basic auth header value": basic,
    }
    for name, value in {"hec token": HEC_TOKEN, "http password": HTTP_PASSWORD, "hash key": HASH_KEY}.items():
        found[name] = value
        found[f"{name} (base64)"] = base64.b64encode(value.encode()).decode()
    return found


def config_document(tmp_path: Path, emu, hec: HecReceiver, http: HttpReceiver, secret_key: str) -> dict:
    token_file = tmp_path / "hec-token"
    token_file.write_text(HEC_TOKEN + "\n")
    document = daemon_config_document(emu.address, emu.options.access_key, secret_key, tmp_path)
    document["source"]["max_transient_retries"] = 0
    document["streams"]["include"] = ["activities", "queries"]
    document["sinks"] = [
        {
            "type": "http",
            "name": "web",
            "url": http.url,
            "auth": "basic",
            "username": "collector",
            "password": HTTP_PASSWORD,
            "retry": {"initial": "50ms", "maximum": "100ms"},
        },
        {"type": "splunk_hec", "name": "splunk", "url": hec.base_url, "token_file": str(token_file)},
    ]
    document["normalize"] = {"redact": [{"field": "queryBody", "action": "hash"}], "hash_key": HASH_KEY}
    document["metrics"] = {"listen": f"127.0.0.1:{free_port()}"}
    document["engine"] = {"sink_failure_pause": "0.2s", "shutdown_timeout": "1s"}
    document["logging"] = {"format": "auto"}  # stderr is a file: JSON lines
    return document


def assert_log_lines(stderr: str) -> None:
    """JSON lines (bar the CLI's one-line error), stream and sink named where they matter."""
    for line in stderr.splitlines():
        if line.startswith("auditstream: "):
            continue  # the CLI's final error message, plain text by design
        record = orjson.loads(line)
        logger = record["logger"]
        if logger.startswith(("auditstream.sink", "auditstream.fanout")):
            assert "sink" in record, record
        if logger.startswith(("auditstream.poller", "auditstream.longqueries", "auditstream.normalize")):
            assert "stream" in record, record


async def check(config: Path) -> str:
    code, out = await run_check(config)
    assert code == 1, out  # the refused key, or the refused HEC token
    return out


async def test_no_secret_in_logs_metrics_readyz_or_check(make_emulator, tmp_path):
    emu = await make_emulator(records=30)
    api_secret = emu.options.secret_key
    basic = "Basic " + base64.b64encode(f"collector:{HTTP_PASSWORD}".encode()).decode()
    async with HecReceiver(token="the-receivers-own-token") as hec, HttpReceiver(expected_auth=basic) as http:
        # 1. The API refuses the key: the daemon stops but serves why for a while.
        wrong = base64.b64encode(WRONG_API_SECRET_TEXT.encode()).decode()
        (tmp_path / "refused").mkdir()
        refused_doc = config_document(tmp_path / "refused", emu, hec, http, wrong)
        refused_config = write_config(tmp_path / "refused" / "config.toml", refused_doc)
        refused = Run(refused_config, refused_doc["metrics"]["listen"], tmp_path / "refused")
        await refused.start()
        await async_wait_until(refused.answering, 30, "the refused daemon's HTTP server")

        async def rejected():
            metrics = parse_metrics((await refused.get("/metrics"))[1])
            return metrics if metrics.get("auditstream_api_credentials_rejected") == 1 else None

        metrics = await async_wait_until(rejected, 30, "auditstream_api_credentials_rejected 1")
        assert metrics.total("auditstream_api_requests_total", code="UNAUTHENTICATED") >= 1
        status, body = await refused.get("/readyz")
        assert status == 503 and emu.options.access_key in body
        assert await refused.stop() == 1

        # 2. The key is right; the HEC receiver refuses the token, the HTTP sink delivers.
        (tmp_path / "running").mkdir()
        doc = config_document(tmp_path / "running", emu, hec, http, api_secret)
        config = write_config(tmp_path / "running" / "config.toml", doc)
        run = Run(config, doc["metrics"]["listen"], tmp_path / "running")
        await run.start()
        await async_wait_until(run.answering, 30, "the daemon's HTTP server")
        await async_wait_until(lambda: http.items and hec.attempts >= 2, 30, "deliveries and token refusals")

        async def hec_failed():
            status, body = await run.get("/readyz")
            return status == 503 and "sink splunk failed" in body

        await async_wait_until(hec_failed, 30, "/readyz naming the failed HEC sink")
        metrics = parse_metrics((await run.get("/metrics"))[1])
        assert metrics.value("auditstream_sink_state", sink="splunk", state="failed") == 1
        assert await run.stop() == 0

        checks = await check(refused_config) + await check(config)

    everything = {
        "refused daemon output": refused.output(),
        "daemon output": run.output(),
        "served /metrics and /readyz": "\n".join(refused.served + run.served),
        "auditstream check": checks,
    }
    assert "HEC rejected the token" in everything["daemon output"]  # the failures were logged...
    assert emu.options.access_key in everything["refused daemon output"]  # ...and named the key
    leaks = [
        f"{secret} in {where}"
        for where, text in everything.items()
        for secret, value in forbidden(api_secret).items()
        if value in text
    ]
    assert leaks == []
    assert_log_lines(run.stderr.read_text())
    assert_log_lines(refused.stderr.read_text())
