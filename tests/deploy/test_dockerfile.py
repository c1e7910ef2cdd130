"""The Dockerfile: hadolint, its structure, the .dockerignore, and the HEALTHCHECK command.

No Docker engine runs here, so the image is never built: these tests lint the Dockerfile,
assert its structure instruction by instruction, and run the HEALTHCHECK's exact command
against a local HTTP server.
"""

from __future__ import annotations

import http.server
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.checks import (
    CONFIG_PATH,
    DOCKERFILE,
    DOCKERIGNORE,
    cli_parser,
    dockerfile_env,
    dockerfile_problems,
    healthcheck_command,
    run_hadolint,
)
from tests.helpers import free_port

TEXT = DOCKERFILE.read_text()


def test_hadolint_passes() -> None:
    assert run_hadolint(DOCKERFILE) == []


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        pytest.param(lambda t: t + "USER root\n", "DL3002", id="last-user-root"),
        pytest.param(
            lambda t: t.replace("python:${PYTHON_VERSION}-slim-bookworm AS build", "python AS build"),
            "DL3006",
            id="untagged-base",
        ),
        pytest.param(
            lambda t: t.replace(
                "USER 10001:10001", "USER 10001:10001\nRUN apt-get update && apt-get install -y curl"
            ),
            "DL3008",
            id="unpinned-apt",
        ),
        pytest.param(
            lambda t: t + "# hadolint ignore=DL3002\nUSER root\n", "DL3002", id="ignore-pragma-not-honoured"
        ),
    ],
)
def test_hadolint_fails_on_broken_copy(tmp_path: Path, change, rule: str) -> None:
    broken = tmp_path / "Dockerfile"
    broken.write_text(change(TEXT))
    problems = run_hadolint(broken)
    assert any(rule in line for line in problems), problems


def test_dockerfile_structure() -> None:
    """Multi-stage slim 3.11, wheel built in stage 1 and installed with --no-index, numeric
    non-root USER last, exec-form default command, OCI labels, read-only-root settings,
    volumes for state and temp, HEALTHCHECK on /healthz, EXPOSE 9464."""
    assert dockerfile_problems(TEXT) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda t: re.sub(r"\nFROM python:\$\{PYTHON_VERSION\}-slim-bookworm AS runtime.*?\n", "\n", t),
            "multi-stage",
        ),
        (lambda t: t.replace("-slim-bookworm AS runtime", "-bookworm AS runtime"), "not a slim Python 3.11"),
        (lambda t: t.replace("ARG PYTHON_VERSION=3.11", "ARG PYTHON_VERSION=3.12"), "not a slim Python 3.11"),
        (lambda t: t.replace("USER 10001:10001", "USER auditstream"), "not numeric"),
        (lambda t: t.replace("USER 10001:10001", "USER 0"), "root"),
        (lambda t: t.replace("USER 10001:10001\n", ""), "no USER"),
        (
            lambda t: t.replace(
                'CMD ["run", "--config", "/etc/auditstream/config.toml"]', "CMD auditstream run"
            ),
            "default command",
        ),
        (lambda t: t.replace("--no-index ", ""), "--no-index"),
        (lambda t: t.replace("org.opencontainers.image.licenses", "org.example.licenses"), "licenses"),
        (
            lambda t: t.replace("PYTHONDONTWRITEBYTECODE=1 \\\n    PYTHONUNBUFFERED", "PYTHONUNBUFFERED"),
            "PYTHONDONTWRITEBYTECODE",
        ),
        (
            lambda t: t.replace('VOLUME ["/var/lib/auditstream", "/tmp"]', 'VOLUME ["/var/lib/auditstream"]'),
            "/tmp",
        ),
        (lambda t: re.sub(r"HEALTHCHECK .*?\]\n", "", t, flags=re.S), "HEALTHCHECK"),
    ],
)
def test_structure_check_fails_on_broken_copy(change, expected: str) -> None:
    broken = change(TEXT)
    assert broken != TEXT, "the mutation did not apply: update the test"
    problems = dockerfile_problems(broken)
    assert any(expected in p for p in problems), problems


def test_dockerignore_is_an_allow_list() -> None:
    """Only the project metadata and the package reach the build context: no .git, .venv,
    tests, local state or secrets."""
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "the first pattern must exclude everything"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "auditstream"}
    # What the build stage copies must be allowed in.
    assert "COPY . ." in TEXT


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[str, type[_Health]]]:
    handler = type("Handler", (_Health,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/healthz", handler
    finally:
        server.shutdown()
        server.server_close()


def _run_healthcheck(url: str) -> int:
    command = healthcheck_command(TEXT)
    assert command[0] == "python", "the slim image has python, not curl"
    env = {**os.environ, "AUDITSTREAM_HEALTHCHECK_URL": url}
    return subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, timeout=30).returncode


def test_healthcheck_command_passes_on_200_and_fails_otherwise(health_server) -> None:
    """The HEALTHCHECK's exact command: exit 0 on a 200 from /healthz, non-zero on a 503 or
    when nothing listens. Its default URL is the metrics port on loopback."""
    url, handler = health_server
    assert _run_healthcheck(url) == 0
    handler.status = 503
    assert _run_healthcheck(url) != 0
    assert _run_healthcheck(f"http://127.0.0.1:{free_port()}/healthz") != 0
    assert dockerfile_env(TEXT)["AUDITSTREAM_HEALTHCHECK_URL"] == "http://127.0.0.1:9464/healthz"


def test_default_command_is_accepted_by_the_cli() -> None:
    """ENTRYPOINT + CMD parse with the real CLI parser."""
    args = cli_parser().parse_args(["run", "--config", CONFIG_PATH])
    assert args.command == "run"
    assert args.config == CONFIG_PATH
