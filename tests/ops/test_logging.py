"""Log format, names on every stream/sink line, and secrets scrubbed."""

from __future__ import annotations

import asyncio
import io
import logging

import orjson
import pytest
import structlog

from auditstream.engine.engine import RunPlan
from auditstream.ops.logging import configure_logging
from auditstream.ops.secrets import REDACTED, config_secrets, redact, register_secrets
from auditstream.sinks.base import ProbeResult, SinkHealth
from tests.e2e.support import daemon_config, live_engine
from tests.helpers import async_wait_until


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def captured(restores_logging):
    """Logs of this test as a string buffer; the previous set-up is restored afterwards."""
    return io.StringIO()


def lines(buffer: io.StringIO) -> list[dict]:
    return [orjson.loads(line) for line in buffer.getvalue().splitlines()]


def test_json_lines_when_not_a_terminal(captured):
    configure_logging("info", "auto", stream=captured)
    structlog.get_logger("auditstream.test").info("hello", stream="activities", n=3)
    structlog.get_logger("auditstream.test").debug("below the level")
    logging.getLogger("aiohttp.server").warning("a library speaks: %s", "too")
    first, second = lines(captured)
    assert first["event"] == "hello" and first["stream"] == "activities" and first["n"] == 3
    assert first["level"] == "info" and first["logger"] == "auditstream.test" and first["timestamp"]
    assert second == {
        **second,
        "event": "a library speaks: too",
        "logger": "aiohttp.server",
        "level": "warning",
    }


def test_readable_console_on_a_terminal(captured):
    terminal = Tty()
    configure_logging("info", "auto", stream=terminal)
    structlog.get_logger("auditstream.test").warning("sink failed", sink="siem")
    text = terminal.getvalue()
    assert "sink failed" in text and "sink=siem" in text and "[warning" in text
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(text)


def test_registered_secrets_are_scrubbed_everywhere_in_a_line(captured):
    configure_logging("info", "json", stream=captured)
    register_secrets(["hunter2-very-secret", "abc"])  # too short to scrub without mangling text
    log = structlog.get_logger("auditstream.test")
    log.info("token hunter2-very-secret in the message", detail={"headers": ["Bearer hunter2-very-secret"]})
    try:
        raise ValueError("refused hunter2-very-secret")
    except ValueError:
        log.exception("failed")
    logging.getLogger("aiohttp.client").error("foreign hunter2-very-secret")
    log.info("a short secret would mangle words: abc stays")
    text = captured.getvalue()
    assert "hunter2-very-secret" not in text
    parsed = lines(captured)
    assert parsed[0]["event"] == f"token {REDACTED} in the message"
    assert parsed[0]["detail"] == {"headers": [f"Bearer {REDACTED}"]}
    assert "ValueError: refused [redacted]" in parsed[1]["exception"]
    assert parsed[2]["event"] == f"foreign {REDACTED}"
    assert parsed[3]["event"].endswith("abc stays")


def test_config_secrets_cover_every_secret_and_its_encodings(tmp_path, captured):
    import base64

    from auditstream.emulator import EmulatorOptions

    options = EmulatorOptions()
    config = daemon_config(
        _Address(options),
        tmp_path,
        sinks=[
            {
                "type": "http",
                "name": "h",
                "url": "https://siem.example/in",
                "auth": "basic",
                "username": "collector",
                "password": "pa55word-xyz",
            },
            {
                "type": "splunk_hec",
                "name": "s",
                "url": "https://hec.example:8088",
                "token": "hec-token-123456",
            },
        ],
        extra={
            "normalize": {
                "redact": [{"field": "actor.email", "action": "hash"}],
                "hash_key": "hash-key-987654",
            }
        },
    )
    register_secrets(config_secrets(config))
    secret_key = options.secret_key
    pair = base64.b64encode(b"collector:pa55word-xyz").decode()
    for leak in (
        secret_key,
        base64.b64decode(secret_key).decode(),
        "pa55word-xyz",
        "hec-token-123456",
        "hash-key-987654",
        pair,
        base64.b64encode(b"hec-token-123456").decode(),
    ):
        assert redact(f"<{leak}>") == f"<{REDACTED}>", leak
    assert redact(f"Authorization: Basic {pair}") == f"Authorization: Basic {REDACTED}"
    assert redact("Authorization: Splunk hec-token-123456") == f"Authorization: Splunk {REDACTED}"
    # the access key is an identifier, logged on purpose
    assert redact(f"key {options.access_key}") == f"key {options.access_key}"


class _Address:
    def __init__(self, options):
        self.options = options
        self.address = "127.0.0.1:1"


class _ChattySink:
    """A sink whose background task logs without naming itself, as a library would."""

    name = "chatty"

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        self.logged = asyncio.Event()

    def routes(self, stream: str) -> bool:
        return True

    async def start(self) -> None:
        self.task = asyncio.create_task(self._background())

    async def _background(self) -> None:
        structlog.get_logger("auditstream.sinks.chatty").warning("background hiccup")
        self.logged.set()
        await asyncio.Event().wait()

    async def send(self, batch) -> None:
        return None

    async def probe(self) -> ProbeResult:
        return ProbeResult(True, "fine")

    def health(self) -> SinkHealth:
        return SinkHealth()

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()


async def test_stream_and_sink_names_reach_lines_that_do_not_pass_them(make_emulator, tmp_path, captured):
    """The engine binds ``stream`` on each poller's tasks and ``sink`` on what a sink starts:
    the long-query tracker logs the cap without a stream argument, the sink's task logs
    without its name, and both lines still carry them."""
    configure_logging("info", "json", stream=captured)
    emu = await make_emulator(records=20, long_sessions=3, long_session_close_within=3600)
    config = daemon_config(emu, tmp_path, streams={"include": ["queries"], "long_query_max_open": 1})
    engine = live_engine(config)
    sink = _ChattySink()
    engine.sinks = [sink]
    task = asyncio.create_task(engine.run())
    try:
        await async_wait_until(lambda: "cap reached" in captured.getvalue() and sink.logged.is_set(), 20)
    finally:
        engine.stop.set()
        await asyncio.wait_for(task, 30)
    parsed = lines(captured)
    cap = [line for line in parsed if "cap reached" in line["event"]]
    assert cap and all(line["stream"] == "queries" for line in cap)
    hiccup = [line for line in parsed if line["event"] == "background hiccup"]
    assert hiccup == [{**hiccup[0], "sink": "chatty"}]
    assert "stream" not in hiccup[0]  # the sink was started outside any stream's context
    assert isinstance(engine.plan, RunPlan)
