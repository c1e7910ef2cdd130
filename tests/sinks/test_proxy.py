"""The aiohttp sinks through a real egress proxy (Debian's tinyproxy, tests/peers/tinyproxy.py)
on loopback: CONNECT tunnels to TLS receivers, plain forwarding to http ones, the ``proxy``
key, ``HTTPS_PROXY`` / ``NO_PROXY``, and proxy credentials (407 names the setting; the
password is in no log, exception, health or ``check`` output)."""

from __future__ import annotations

import base64
import logging
from typing import Any

import pytest
from pydantic import ValidationError

from auditstream.ops.secrets import REDACTED, Secrets, config_secrets, redact
from auditstream.sinks.base import SinkFatalError, SinkState
from auditstream.sinks.datadog import DatadogSink, DatadogSinkSettings
from auditstream.sinks.http import HttpSink, HttpSinkSettings
from auditstream.sinks.proxy import ProxyResolver, no_proxy_matches
from auditstream.sinks.splunk_hec import SplunkHecSink, SplunkHecSinkSettings
from tests.peers.datadog import DatadogReceiver
from tests.peers.hec import HecReceiver
from tests.peers.http_receiver import HttpReceiver
from tests.peers.tinyproxy import Tinyproxy
from tests.peers.tls import make_pki
from tests.sinks.conftest import FAST_RETRY, envelopes, logged

PROXY_USER = "auditstream"
PROXY_PASSWORD = "pr0xy-PASSWORD-5521"


@pytest.fixture
def pki(tmp_path):
    return make_pki(tmp_path / "pki")


def http_settings(receiver: HttpReceiver, pki, **overrides: Any) -> HttpSinkSettings:
    config: dict[str, Any] = {
        "type": "http",
        "name": "web",
        "url": receiver.url,
        "retry": FAST_RETRY,
        "timeout": 10,
        "tls": {"ca_file": str(pki.ca_file)},
    }
    config.update(overrides)
    return HttpSinkSettings.model_validate(config)


def hec_settings(receiver: HecReceiver, pki, **overrides: Any) -> SplunkHecSinkSettings:
    config: dict[str, Any] = {
        "type": "splunk_hec",
        "name": "splunk",
        "url": receiver.base_url,
        "token": receiver.token,
        "retry": FAST_RETRY,
        "timeout": 10,
        "tls": {"ca_file": str(pki.ca_file)},
    }
    config.update(overrides)
    return SplunkHecSinkSettings.model_validate(config)


async def test_the_http_sink_tunnels_to_a_tls_receiver_through_its_proxy_key(pki, state_dir, tmp_path):
    async with HttpReceiver(ssl_context=pki.server_context()) as receiver:
        with Tinyproxy(tmp_path / "proxy", [receiver.port]) as proxy:
            sink = HttpSink(http_settings(receiver, pki, proxy=proxy.url), state_dir=state_dir)
            probe = await sink.probe()
            await sink.start()
            batch = envelopes("activities", 30)
            await sink.send(batch)
            await sink.close()
            tunnels = proxy.tunnels()
    assert probe.ok, probe.detail
    assert receiver.items == [e.event for e in batch]
    assert tunnels and set(tunnels) == {f"127.0.0.1:{receiver.port}"}  # TLS end to end, through it


async def test_splunk_hec_goes_through_HTTPS_PROXY_unless_NO_PROXY_names_the_host(
    pki, state_dir, tmp_path, monkeypatch
):
    async with HecReceiver(ssl_context=pki.server_context()) as hec:
        with Tinyproxy(tmp_path / "proxy", [hec.port]) as proxy:
            monkeypatch.setenv("HTTPS_PROXY", proxy.url)
            sink = SplunkHecSink(hec_settings(hec, pki), state_dir=state_dir)
            await sink.start()
            await sink.send(envelopes("activities", 20))
            await sink.close()
            through = len(proxy.tunnels())
            monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
            direct = SplunkHecSink(hec_settings(hec, pki), state_dir=state_dir)
            await direct.start()
            await direct.send(envelopes("activities", 20, start=20))
            await direct.close()
            after = len(proxy.tunnels())
    assert through >= 1 and set(proxy.tunnels()) == {f"127.0.0.1:{hec.port}"}
    assert after == through  # NO_PROXY: connected directly
    assert len(hec.events) == 40


async def test_a_proxy_asking_for_credentials_names_the_setting_and_keeps_the_data(
    pki, state_dir, tmp_path, caplog, capsys
):
    caplog.set_level(logging.DEBUG)
    password_file = tmp_path / "proxy-password"
    password_file.write_text(PROXY_PASSWORD + "\n")
    async with HttpReceiver(ssl_context=pki.server_context()) as receiver:
        with Tinyproxy(tmp_path / "proxy", [receiver.port], (PROXY_USER, PROXY_PASSWORD)) as proxy:
            config = http_settings(receiver, pki, proxy=proxy.url)
            probe = await HttpSink(config, state_dir=state_dir).probe()
            sink = HttpSink(config, state_dir=state_dir)
            await sink.start()
            with pytest.raises(SinkFatalError, match="HTTP 407") as failure:
                await sink.send(envelopes("activities", 5))
            health = sink.health()
            await sink.close()
            assert receiver.attempts == 0 and not (state_dir / "dead-letter").exists()
            # wrong credentials: the same, and the password that was tried is named nowhere
            wrong = http_settings(
                receiver, pki, proxy=proxy.url, proxy_username=PROXY_USER, proxy_password="not-the-PASSWORD-1"
            )
            with pytest.raises(SinkFatalError, match=r"refused the credentials .*: check proxy_username"):
                sink = HttpSink(wrong, state_dir=state_dir)
                await sink.start()
                try:
                    await sink.send(envelopes("activities", 5))
                finally:
                    await sink.close()
            fixed = http_settings(
                receiver,
                pki,
                proxy=proxy.url,
                proxy_username=PROXY_USER,
                proxy_password_file=str(password_file),
            )
            good_probe = await HttpSink(fixed, state_dir=state_dir).probe()
            sink = HttpSink(fixed, state_dir=state_dir)
            await sink.start()
            await sink.send(envelopes("activities", 5))
            await sink.close()
    message = str(failure.value)
    assert f"the proxy {proxy.url} (from proxy) asks for credentials" in message
    assert "set proxy_username and proxy_password / proxy_password_file" in message
    assert health.state is SinkState.FAILED and not probe.ok and "HTTP 407" in probe.detail
    assert good_probe.ok and len(receiver.items) == 5
    pair = base64.b64encode(f"{PROXY_USER}:{PROXY_PASSWORD}".encode()).decode()
    for text in (message, probe.detail, good_probe.detail, logged(caplog, capsys), repr(fixed)):
        assert PROXY_PASSWORD not in text and pair not in text and "not-the-PASSWORD-1" not in text
    assert redact(f"Proxy-Authorization: Basic {pair}", Secrets(config_secrets(fixed))) == (
        f"Proxy-Authorization: Basic {REDACTED}"
    )


async def test_a_plain_http_receiver_is_forwarded_and_a_407_answer_names_the_variable(
    state_dir, tmp_path, monkeypatch, caplog, capsys
):
    """No tunnel for http://: the proxy forwards the request, and its 407 is an answer, which
    the sink must not take for the receiver's."""
    caplog.set_level(logging.DEBUG)
    async with HttpReceiver() as receiver:
        with Tinyproxy(tmp_path / "proxy", [], (PROXY_USER, PROXY_PASSWORD)) as proxy:
            monkeypatch.setenv("HTTP_PROXY", proxy.url)
            sink = HttpSink(
                HttpSinkSettings.model_validate({"type": "http", "name": "web", "url": receiver.url}),
                state_dir=state_dir,
            )
            await sink.start()
            with pytest.raises(SinkFatalError, match="HTTP 407") as failure:
                await sink.send(envelopes("activities", 3))
            await sink.close()
            host = proxy.url.removeprefix("http://")
            monkeypatch.setenv("HTTP_PROXY", f"http://{PROXY_USER}:{PROXY_PASSWORD}@{host}")
            settings = HttpSinkSettings.model_validate({"type": "http", "name": "web", "url": receiver.url})
            sink = HttpSink(settings, state_dir=state_dir)
            await sink.start()
            await sink.send(envelopes("activities", 3))
            await sink.close()
            forwarded = proxy.forwarded()
    assert "or the credentials in HTTP_PROXY" in str(failure.value)
    assert not (state_dir / "dead-letter").exists() and len(receiver.items) == 3
    assert f"POST {receiver.url}" in forwarded
    assert PROXY_PASSWORD not in logged(caplog, capsys)
    assert redact(PROXY_PASSWORD, Secrets(config_secrets(settings))) == REDACTED  # the variable's too


async def test_the_datadog_sink_goes_through_the_proxy_too(pki, state_dir, tmp_path, monkeypatch):
    async with DatadogReceiver(ssl_context=pki.server_context()) as receiver:
        with Tinyproxy(tmp_path / "proxy", [receiver.port]) as proxy:
            monkeypatch.setenv("https_proxy", proxy.url)
            config = DatadogSinkSettings.model_validate(
                {
                    "type": "datadog",
                    "name": "datadog",
                    "endpoint_url": receiver.base_url,
                    "api_key": receiver.api_key,
                    "tls": {"ca_file": str(pki.ca_file)},
                }
            )
            sink = DatadogSink(config, state_dir=state_dir)
            await sink.start()
            await sink.send(envelopes("activities", 4))
            await sink.close()
            tunnels = proxy.tunnels()
    assert len(receiver.entries) == 4 and set(tunnels) == {f"127.0.0.1:{receiver.port}"}


async def test_a_proxy_that_is_down_is_retried_and_named(pki, state_dir, tmp_path):
    async with HttpReceiver(ssl_context=pki.server_context()) as receiver:
        proxy = Tinyproxy(tmp_path / "proxy", [receiver.port])  # not started: nothing listens
        sink = HttpSink(http_settings(receiver, pki, proxy=proxy.url), state_dir=state_dir)
        probe = await sink.probe()
    assert not probe.ok and f"cannot reach the proxy {proxy.url} (from proxy)" in probe.detail


def test_which_proxy_a_request_goes_through():
    def route(url: str, env: dict[str, str], **keys: Any) -> str | None:
        settings = HttpSinkSettings.model_validate({"type": "http", "name": "w", "url": url, **keys})
        found = ProxyResolver(settings, env).route(url)
        return None if found is None else f"{found.url} {found.source} {found.authorization}"

    https = "https://siem.example.com/in"
    assert route(https, {}) is None
    assert route(https, {"HTTP_PROXY": "http://p:1"}) is None  # http's proxy is not https's
    both = {"HTTPS_PROXY": "http://P:1", "https_proxy": "http://p:2"}
    assert route(https, both) == "http://p:2 https_proxy None"  # lower case first, as curl
    assert route(https, {"HTTPS_PROXY": "p:3128"}) == "http://p:3128 HTTPS_PROXY None"
    with_user = route(https, {"HTTPS_PROXY": "http://u%40corp:s%3Acret@p:3128"})
    assert with_user == f"http://p:3128 HTTPS_PROXY Basic {base64.b64encode(b'u@corp:s:cret').decode()}"
    assert route(https, {"HTTPS_PROXY": "http://p:1", "NO_PROXY": ".example.com"}) is None
    assert route(https, {"HTTPS_PROXY": "http://p:1", "no_proxy": "other.com,siem.example.com:443"}) is None
    assert route(https, {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "siem.example.com:8443"}) is not None
    keyed = route(
        https, {"NO_PROXY": "*"}, proxy="http://corp:8080", proxy_username="a", proxy_password="bbbbbb"
    )
    assert keyed == f"http://corp:8080 proxy Basic {base64.b64encode(b'a:bbbbbb').decode()}"


def test_no_proxy_entries():
    assert no_proxy_matches("*", "anything", None)
    assert no_proxy_matches("example.com", "a.b.example.com", 443)
    assert no_proxy_matches(".example.com", "example.com", 443)
    assert not no_proxy_matches("example.com", "badexample.com", 443)
    assert no_proxy_matches("127.0.0.1", "127.0.0.1", 8088)
    assert no_proxy_matches("[::1]:8088", "::1", 8088) and not no_proxy_matches("[::1]:8088", "::1", 9)
    assert not no_proxy_matches(" ", "example.com", None)


def test_proxy_settings_are_checked():
    base = {"type": "http", "name": "w", "url": "https://siem.example.com/in"}
    with pytest.raises(ValidationError, match="not in its URL"):
        HttpSinkSettings.model_validate({**base, "proxy": "http://u:p@corp:8080"})
    with pytest.raises(ValidationError, match="go together"):
        HttpSinkSettings.model_validate({**base, "proxy": "http://corp:8080", "proxy_username": "u"})
    with pytest.raises(ValidationError, match="not an http"):
        HttpSinkSettings.model_validate({**base, "proxy": "socks5://corp:1080"})
