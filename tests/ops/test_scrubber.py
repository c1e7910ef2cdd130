"""The one scrubber: every form of a secret, in every output that does not go through a log
line (those are covered by test_logging.py): /metrics label values, the /readyz body, the
systemd status line, and a receiver's answer quoted after scrubbing, never before."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import aiohttp
import pytest
import structlog
from aiohttp.test_utils import TestServer

from auditstream.ops import metrics, secrets
from auditstream.ops.sdnotify import SystemdNotifier
from auditstream.ops.secrets import (
    MIN_SECRET_LENGTH,
    REDACTED,
    Secrets,
    config_secrets,
    redact,
    register_expiring,
    register_secrets,
    scrub,
)
from auditstream.ops.server import build_app
from auditstream.ops.status import DaemonStatus
from auditstream.settings_base import StrictModel
from auditstream.sinks.base import SinkHealth, SinkState
from auditstream.sinks.http import HttpSinkSettings
from auditstream.sinks.http_client import QUOTE_LIMIT
from auditstream.sinks.http_client import quote as quote_answer
from tests.ops.test_sdnotify import bind_datagram, socket_path
from tests.ops.test_status import StubEngine

# Characters a JSON encoder escapes and a URL percent-encodes, and non-ASCII.
TOKEN = 'tok"en\\with/sl-é-4711'


@pytest.fixture(autouse=True)
def registry(monkeypatch):
    """A registry of this test's own, dropped afterwards."""
    monkeypatch.setattr(secrets, "_REGISTRY", Secrets())


def leaked(text: str, *values: str) -> list[str]:
    """Which of ``values`` (or a 6-character piece of one) appear in ``text``."""
    return [value for value in values for i in range(len(value) - 5) if value[i : i + 6] in text]


def test_every_form_a_secret_leaves_in_is_replaced():
    register_secrets([TOKEN])
    pair = base64.b64encode(f"collector:{TOKEN}".encode()).decode()
    encoded = base64.b64encode(TOKEN.encode()).decode()
    for carried in (
        TOKEN,
        f"Bearer {TOKEN}",
        json.dumps({"authorization": f"Bearer {TOKEN}"}),  # escapes " and \
        json.dumps({"authorization": TOKEN}, ensure_ascii=False),
        json.dumps(TOKEN).replace("/", "\\/"),  # as PHP writes JSON
        f"?token={quote(TOKEN, safe='')}",
        encoded,
        encoded.rstrip("="),
        base64.urlsafe_b64encode(TOKEN.encode()).decode(),
    ):
        assert leaked(redact(carried), TOKEN, encoded.rstrip("=")) == [], carried
        assert REDACTED in redact(carried)
    register_secrets([f"collector:{TOKEN}"])
    assert redact(f"Authorization: Basic {pair}") == f"Authorization: Basic {REDACTED}"


def test_overlapping_secrets_leave_no_piece_behind():
    register_secrets(["abcdef-1234", "1234-uvwxyz"])
    assert redact("<abcdef-1234-uvwxyz>") == f"<{REDACTED}>"
    assert redact("abcdef-1234 and 1234-uvwxyz") == f"{REDACTED} and {REDACTED}"


def test_short_values_are_not_scrubbed_and_structures_are():
    register_secrets(["abc", "s3cret-value"])
    assert redact("abc stays") == "abc stays"
    assert scrub({"a": ["x s3cret-value", 3, None, True], "b": b"s3cret-value"}) == {
        "a": [f"x {REDACTED}", 3, None, True],
        "b": REDACTED,
    }


def test_local_secrets_are_scrubbed_without_any_registration():
    own = Secrets([TOKEN])
    assert redact(f"Bearer {TOKEN}") == f"Bearer {TOKEN}"  # nothing registered
    assert redact(f"Bearer {TOKEN}", own) == f"Bearer {REDACTED}"


def test_a_quoted_answer_is_scrubbed_before_it_is_cut():
    """A secret straddling the truncation point is replaced whole, not cut in half."""
    own = Secrets([TOKEN])
    body = "x" * (QUOTE_LIMIT - 10) + TOKEN + " y" * 300  # the cut falls inside the token
    quoted = quote_answer(body, own)
    assert len(quoted) <= QUOTE_LIMIT + 3 and quoted.endswith("...")
    assert leaked(quoted, TOKEN) == []
    # collapsing the answer onto one line cannot rebuild a secret that holds a space
    assert quote_answer("pass\nphrase 9-word", Secrets(["pass phrase 9-word"])) == REDACTED


async def test_readyz_and_metrics_serve_no_secret():
    register_secrets([TOKEN])
    health = SinkHealth()
    health.mark(SinkState.FAILED, json.dumps({"echo": f"Bearer {TOKEN}"}))
    status = DaemonStatus(StubEngine(health={"web": health}), max_lag=600)
    status.stopped_by(RuntimeError(f"refused {TOKEN}"))
    metrics.RATE_LIMIT_WAITS.labels(f"bucket-{TOKEN}").inc()
    try:
        async with TestServer(build_app(status), host="127.0.0.1") as server, aiohttp.ClientSession() as http:
            async with http.get(server.make_url("/readyz")) as response:
                assert response.status == 503
                readyz = await response.text()
            async with http.get(server.make_url("/metrics")) as response:
                scraped = await response.text()
    finally:
        metrics.RATE_LIMIT_WAITS.remove(f"bucket-{TOKEN}")
    body = json.loads(readyz)
    assert body["sinks"]["web"]["error"] == json.dumps({"echo": f"Bearer {REDACTED}"})
    assert f"stopped on an error: refused {REDACTED}" in body["reasons"]
    assert f'bucket="bucket-{REDACTED}"' in scraped
    assert leaked(readyz + scraped, TOKEN, json.dumps(TOKEN)[1:-1]) == []


def test_the_systemd_status_line_is_scrubbed(tmp_path):
    register_secrets([TOKEN])
    path = socket_path(tmp_path)
    with bind_datagram(str(path)) as sock:
        SystemdNotifier({"NOTIFY_SOCKET": str(path)}).status(f"stopped on an error: {TOKEN}")
        assert sock.recv(4096).decode() == f"STATUS=stopped on an error: {REDACTED}"


def test_a_secret_too_short_to_scrub_is_named_in_a_warning_at_start():
    """Values under MIN_SECRET_LENGTH are left in output (scrubbing them would mangle words);
    that must not go unsaid: registering the configuration warns, naming the key, not the value."""

    class Config(StrictModel):
        sinks: list[HttpSinkSettings]

    short = {"type": "http", "name": "web", "url": "https://x.example/in", "auth": "bearer", "token": "Ab3$x"}
    basic = {"type": "http", "name": "ok", "url": "https://y.example/in", "auth": "basic"}
    config = Config.model_validate({"sinks": [short, {**basic, "username": "u", "password": "long-pass-1"}]})
    with structlog.testing.capture_logs() as logs:
        register_secrets(config_secrets(config))
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert len(warnings) == 1, warnings
    text = json.dumps(warnings[0])
    assert "sinks[web].token" in text and str(MIN_SECRET_LENGTH) in text and "Ab3$x" not in text
    assert redact("long-pass-1 and u:long-pass-1") == f"{REDACTED} and {REDACTED}"


def test_an_expiring_credential_is_scrubbed_and_its_old_values_let_go():
    """A bearer token renewed every hour is registered under one slot: the newest two values
    are scrubbed (one may still be in flight), older ones are dropped so the registry does
    not grow by a token an hour for as long as the daemon runs."""
    register_secrets([TOKEN])
    tokens = [f"eyJ0eXAi-token-{n}-{'x' * 40}" for n in range(4)]
    for token in tokens:
        register_expiring("azure_monitor:sentinel", token)
    assert redact(" ".join(tokens)) == " ".join([tokens[0], tokens[1], REDACTED, REDACTED])
    assert redact(TOKEN) == REDACTED
    forms_now = len(secrets._REGISTRY.forms)
    register_expiring("azure_monitor:sentinel", tokens[3])  # the same token again: nothing changes
    assert len(secrets._REGISTRY.forms) == forms_now
