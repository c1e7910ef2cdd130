"""Bad input, as a user meets it: each is one error line naming the cause, exit 2 (config)
or 1 (runtime), no traceback, and no secret in the output.

Malformed TOML, unknown keys, wrong types, missing secrets (absent, unreadable file, unset
environment variable), bad credentials, and TLS peers with a self-signed certificate and no
CA configured: the API (``run`` exits 1) and a sink (``check`` fails that sink; ``run``
keeps retrying it, as a certificate can be rotated while the daemon runs, and keeps the data).

The full check that known secrets never reach logs, metrics, ``check`` output or exceptions
is tests/ops (the ops engineer's suite); here the secrets of each case are only checked
against that case's output.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from auditstream import cli
from auditstream.emulator import Emulator, EmulatorOptions, running_emulator
from tests.e2e.support import write_daemon_config
from tests.peers.hec import HecReceiver
from tests.peers.tls import make_pki
from tests.reliability.support import CLI, RESULTS, Figures

pytestmark = pytest.mark.reliability

WRONG_SECRET = base64.b64encode(b"reliability-wrong-secret-0123456789").decode()
HEC_TOKEN = "reliability-token-0123456789"
TRIED: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def bad_inputs_figures() -> Iterator[None]:
    """One line in the figures table for the whole module: how many bad inputs were tried."""
    started = time.monotonic()
    yield
    if TRIED:
        faults = f"{len(TRIED)} bad inputs, each one error line naming the cause: " + "; ".join(TRIED)
        RESULTS.append(
            Figures("bad input (test_bad_input.py)", "-", faults, 0, 0, 0, time.monotonic() - started)
        )


@dataclass
class Case:
    command: str
    expected_exit: int
    cause: list[str]  # every fragment must be on the error line
    secrets: list[str] = field(default_factory=list)
    write: Callable[[Path, Emulator, Emulator], Path] | None = None  # makes the config file


def config_for(
    emu: Emulator, tmp: Path, source: dict[str, Any] | None = None, sinks: list[dict[str, Any]] | None = None
) -> Path:
    """The daemon's config against ``emu``, retrying a failed API call once."""
    source = (source or {}) | {"max_transient_retries": 1}
    return write_daemon_config(emu, tmp, source=source, sinks=sinks)


def text_config(text: str) -> Callable[[Path, Emulator, Emulator], Path]:
    def write(tmp: Path, emu: Emulator, tls_emu: Emulator) -> Path:
        path = tmp / "config.toml"
        path.write_text(text.replace("@ENDPOINT@", emu.address).replace("@STATE@", str(tmp / "state")))
        return path

    return write


BASE = """\
[source]
endpoint = "@ENDPOINT@"
access_key = "auth-demo0emulator0key"
insecure = true
{source}
[checkpoint]
path = "@STATE@/checkpoints.db"
[streams]
{streams}
[[sinks]]
type = "stdout"
"""


def base(source: str = 'secret_key = "c2VjcmV0"', streams: str = "") -> str:
    return BASE.format(source=source, streams=streams)


def with_api(change: Callable[[Emulator], dict[str, Any]]) -> Callable[..., Path]:
    """The config against the plain emulator with the ``[source]`` keys ``change(tls_emu)`` gives."""

    def write(tmp: Path, emu: Emulator, tls_emu: Emulator) -> Path:
        return config_for(emu, tmp, change(tls_emu))

    return write


def _wrong_secret(tls: Emulator) -> dict[str, Any]:
    return {"secret_key": WRONG_SECRET}


def _unknown_key(tls: Emulator) -> dict[str, Any]:
    return {"access_key": "auth-nobody0here"}


def _tls_api(tls: Emulator) -> dict[str, Any]:
    return {"endpoint": tls.address.replace("127.0.0.1", "localhost"), "insecure": False}


CASES: dict[str, Case] = {
    "malformed TOML": Case("run", 2, ["not valid TOML"], write=text_config("[source\nendpoint = 1\n")),
    "unknown key": Case(
        "run",
        2,
        ["streams.poll_intervall", "unknown key"],
        write=text_config(base(streams='poll_intervall = "30s"')),
    ),
    "wrong type": Case(
        "run",
        2,
        ["source.page_size", "integer"],
        write=text_config(base(source='secret_key = "c2VjcmV0"\npage_size = "many"')),
    ),
    "bad duration": Case(
        "check",
        2,
        ["streams.overlap", "not a duration"],
        write=text_config(base(streams='overlap = "5 minutes"')),
    ),
    "secret missing": Case("run", 2, ["source.secret_key", "required"], write=text_config(base(source=""))),
    "secret file unreadable": Case(
        "run",
        2,
        ["secret_key_file", "cannot read /nonexistent/sdm-secret"],
        write=text_config(base(source='secret_key_file = "/nonexistent/sdm-secret"')),
    ),
    "secret from an unset variable": Case(
        "run",
        2,
        ["AUDITSTREAM_RELIABILITY_UNSET", "not set"],
        write=text_config(base(source='secret_key = "${AUDITSTREAM_RELIABILITY_UNSET}"')),
    ),
    "secret not base64": Case(
        "run", 2, ["source.secret_key"], write=text_config(base(source='secret_key = "not base64 at all!"'))
    ),
    "sink token missing": Case(
        "run",
        2,
        ["sinks[0].token", "required"],
        write=text_config(
            base().replace('type = "stdout"', 'type = "splunk_hec"\nname = "hec"\nurl = "https://x:8088"')
        ),
    ),
    "wrong secret": Case("run", 1, ["auth-demo0emulator0key"], [WRONG_SECRET], write=with_api(_wrong_secret)),
    "unknown access key": Case("run", 1, ["auth-nobody0here"], write=with_api(_unknown_key)),
    "self-signed API without a CA": Case("run", 1, ["TLS", "ca_file"], write=with_api(_tls_api)),
}


@pytest.fixture(scope="module")
def emulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Emulator, Emulator]]:
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    tls_options = EmulatorOptions(
        records=10, tls_cert_file=str(pki.cert_file), tls_key_file=str(pki.key_file)
    )
    with running_emulator(EmulatorOptions(records=10)) as plain, running_emulator(tls_options) as tls:
        yield plain, tls


def run_cli(command: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, command, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if k != "AUDITSTREAM_RELIABILITY_UNSET"},
    )


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_naming_the_cause(name, emulators, tmp_path, capfd, monkeypatch):
    case = CASES[name]
    assert case.write is not None
    config = case.write(tmp_path, *emulators)
    if case.expected_exit == 2:
        # Configuration errors end before anything starts: cli.main in-process is the same
        # path as the command (and 1 s quicker per case than a new interpreter).
        monkeypatch.delenv("AUDITSTREAM_RELIABILITY_UNSET", raising=False)
        code = cli.main([case.command, "--config", str(config)])
        stdout, stderr = capfd.readouterr()
    else:
        result = run_cli(case.command, config)
        code, stdout, stderr = result.returncode, result.stdout, result.stderr
    output = stdout + stderr
    assert code == case.expected_exit, output
    if case.command == "check":
        errors = [line for line in stdout.splitlines() if line.startswith("FAIL")]
    else:
        errors = [line for line in stderr.splitlines() if line.startswith("auditstream: ")]
    assert len(errors) == 1, f"one error line, got {errors}\n{output}"
    for fragment in case.cause:
        assert fragment in errors[0], f"{fragment!r} not in {errors[0]!r}"
    assert "Traceback" not in output
    for secret in case.secrets:
        assert secret not in output
    TRIED.append(f"{name} (exit {code})")


async def test_self_signed_sink_without_a_ca_fails_its_check(tmp_path):
    pki = make_pki(tmp_path / "pki")
    async with (
        Emulator(EmulatorOptions(records=10)) as emu,
        HecReceiver(token=HEC_TOKEN, ssl_context=pki.server_context()) as hec,
    ):
        url = hec.base_url.replace("127.0.0.1", "localhost")
        sinks = [{"type": "splunk_hec", "name": "hec", "url": url, "token": HEC_TOKEN}]
        config = config_for(emu, tmp_path, sinks=sinks)
        proc = await asyncio.create_subprocess_exec(
            *CLI,
            "check",
            "--config",
            str(config),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
        )
        out, err = await proc.communicate()
    stdout = out.decode()
    assert proc.returncode == 1, stdout + err.decode()
    (failure,) = [line for line in stdout.splitlines() if line.startswith("FAIL")]
    assert failure.startswith("FAIL  sink hec") and "CERTIFICATE_VERIFY_FAILED" in failure.upper(), failure
    assert HEC_TOKEN not in stdout + err.decode()
    TRIED.append("self-signed sink without a CA (check exit 1)")
