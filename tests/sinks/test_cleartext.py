"""Credentials over plain http:// to another host are said, by ``check`` and at start;
https://, loopback, and a sink that sends no credential are not."""

from __future__ import annotations

import io
from typing import Any

import pytest
from pydantic import TypeAdapter

from auditstream.ops.check import run_check
from auditstream.sinks.http_client import cleartext_warning
from auditstream.sinks.registry import SinkSettings

# Start-up runs in this process here: its logging set-up is undone after each test.
pytestmark = pytest.mark.usefixtures("restores_logging")

TOKEN = "a-token-of-twenty-chars"


def sink(config: dict[str, Any]) -> Any:
    return TypeAdapter(SinkSettings).validate_python({"name": "siem", **config})


@pytest.mark.parametrize(
    ("config", "said"),
    [
        ({"type": "splunk_hec", "url": "http://splunk.corp:8088", "token": TOKEN}, True),
        ({"type": "splunk_hec", "url": "https://splunk.corp:8088", "token": TOKEN}, False),
        ({"type": "splunk_hec", "url": "http://127.0.0.1:8088", "token": TOKEN}, False),
        ({"type": "splunk_hec", "url": "http://localhost:8088", "token": TOKEN}, False),
        ({"type": "splunk_hec", "url": "http://[::1]:8088", "token": TOKEN}, False),
        ({"type": "http", "url": "http://collector.corp/in"}, False),
        ({"type": "http", "url": "http://collector.corp/in", "auth": "bearer", "token": TOKEN}, True),
        ({"type": "http", "url": "http://collector.corp/in", "headers": {"X-Api-Key": TOKEN}}, True),
        ({"type": "elasticsearch", "urls": ["http://es1.corp:9200", "https://es2.corp:9200"]}, False),
        (
            {
                "type": "elasticsearch",
                "urls": ["http://es1.corp:9200", "https://es2.corp:9200"],
                "username": "shipper",
                "password": TOKEN,
            },
            True,
        ),
        ({"type": "datadog", "api_key": TOKEN}, False),
        ({"type": "datadog", "api_key": TOKEN, "endpoint_url": "http://relay.corp:8080"}, True),
    ],
)
def test_credentials_over_plain_http_to_another_host_are_said(config, said):
    warning = cleartext_warning(sink(config))
    if not said:
        assert warning is None
        return
    assert warning is not None and "plain http://" in warning and TOKEN not in warning
    assert "https://es2" not in warning, "only the plain http:// URLs are named"


async def test_check_prints_it_as_a_warning(tmp_path):
    config = tmp_path / "auditstream.toml"
    config.write_text(
        f"""
[source]
endpoint = "127.0.0.1:1"
access_key = "auth-0123456789"
secret_key = "c2VjcmV0c2VjcmV0c2VjcmV0"

[checkpoint]
path = "{tmp_path / "state" / "checkpoints.db"}"

[[sinks]]
type = "splunk_hec"
name = "siem"
url = "http://splunk.invalid:8088"
token = "{TOKEN}"
"""
    )
    out = io.StringIO()
    await run_check(config, out)
    warned = [line for line in out.getvalue().splitlines() if line.startswith("WARN  sink siem")]
    assert len(warned) == 1 and "http://splunk.invalid:8088" in warned[0], out.getvalue()
    assert TOKEN not in out.getvalue()
