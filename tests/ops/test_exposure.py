"""Secrets other users of the machine can read are said by key and file, never by value."""

from __future__ import annotations

import base64
import io
import logging
from pathlib import Path

import pytest

from auditstream.config import load_config
from auditstream.ops import startup
from auditstream.ops.check import run_check
from auditstream.ops.exposure import exposed_secrets

# Start-up runs in this process here: its logging set-up is undone after each test.
pytestmark = pytest.mark.usefixtures("restores_logging")

SECRET_KEY = base64.b64encode(b"an-api-secret-key-of-sorts").decode()
TOKEN = "a-hec-token-0123456789"


def write_config(tmp_path: Path, *, config_mode: int, token_mode: int, inline: bool) -> Path:
    token = tmp_path / "hec-token"
    token.write_text(TOKEN + "\n")
    token.chmod(token_mode)
    ca = tmp_path / "ca.pem"  # a public file: never said, whatever its mode
    ca.write_text("not read by this test\n")
    ca.chmod(0o644)
    secret = f'secret_key = "{SECRET_KEY}"' if inline else 'secret_key = "${SDM_SECRET_KEY}"'
    config = tmp_path / "auditstream.toml"
    config.write_text(
        f"""
[source]
endpoint = "127.0.0.1:1"
access_key = "auth-0123456789"
{secret}

[checkpoint]
path = "{tmp_path / "state" / "checkpoints.db"}"

[[sinks]]
type = "splunk_hec"
name = "siem"
url = "https://127.0.0.1:1"
token_file = "{token}"
tls.ca_file = "{ca}"
"""
    )
    config.chmod(config_mode)
    return config


@pytest.mark.parametrize("inline", [True, False])
def test_world_readable_secret_file_and_config_with_inline_secrets_are_named(tmp_path, monkeypatch, inline):
    monkeypatch.setenv("SDM_SECRET_KEY", SECRET_KEY)
    path = write_config(tmp_path, config_mode=0o644, token_mode=0o644, inline=inline)
    found = exposed_secrets(path, load_config(path))
    text = "\n".join(found)
    assert SECRET_KEY not in text and TOKEN not in text
    assert any(line.startswith("sinks[0].token_file:") and "mode 0644" in line for line in found), found
    assert "ca_file" not in text, "a CA bundle holds no secret"
    inline_said = [line for line in found if "inline" in line]
    if inline:
        assert len(inline_said) == 1 and "source.secret_key" in inline_said[0], found
    else:
        assert not inline_said, "a ${ENV} reference is not an inline secret"


@pytest.mark.parametrize(("config_mode", "token_mode"), [(0o600, 0o600), (0o640, 0o440), (0o644, 0o400)])
def test_nothing_is_said_when_only_the_daemon_and_its_group_can_read(
    tmp_path, monkeypatch, config_mode, token_mode
):
    monkeypatch.setenv("SDM_SECRET_KEY", SECRET_KEY)
    # 0644 for the config is fine when it holds no secret inline (the last case: the token is a file).
    inline = config_mode != 0o644
    path = write_config(tmp_path, config_mode=config_mode, token_mode=token_mode, inline=inline)
    assert exposed_secrets(path, load_config(path)) == []


async def test_check_warns_without_failing_and_without_the_values(tmp_path):
    path = write_config(tmp_path, config_mode=0o604, token_mode=0o604, inline=True)
    out = io.StringIO()
    await run_check(path, out)
    lines = [line for line in out.getvalue().splitlines() if line.startswith("WARN  secrets")]
    assert len(lines) == 2, out.getvalue()
    assert SECRET_KEY not in out.getvalue() and TOKEN not in out.getvalue()


def test_run_and_backfill_log_it_at_start(tmp_path, caplog):
    path = write_config(tmp_path, config_mode=0o644, token_mode=0o600, inline=True)
    with caplog.at_level(logging.WARNING):
        startup.load(path)
    said = [r for r in caplog.records if "readable by other users" in r.getMessage()]
    assert said, [r.getMessage() for r in caplog.records]
    assert all(SECRET_KEY not in r.getMessage() for r in caplog.records)
