"""moto in server mode (``moto_server``): a real AWS protocol endpoint (S3, CloudWatch Logs) as
its own process on 127.0.0.1, and boto3 clients to read back what the sinks wrote.

Its state lives in memory: after ``stop()`` and ``start()`` (same port, so a sink sees
"down, then up") buckets and log groups must be created again.

Pytest fixtures (import ``aws_env_fixture`` and ``moto_fixture`` into a test module):
``aws_env`` puts test credentials in the environment and keeps the machine's own AWS config
and instance metadata out of reach; ``moto`` is one server for the whole session (tests use
their own bucket / log group).
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.helpers import free_port, wait_until

REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
# The chain must find the test keys and nothing else: no profile, no config file, no IMDS.
ISOLATION = {
    "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
}
CLEARED = (
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_PROFILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)


def moto_server_command() -> str:
    beside = Path(sys.executable).parent / "moto_server"
    found = str(beside) if beside.exists() else shutil.which("moto_server")
    if found is None:
        raise RuntimeError("moto_server not found: run make deps (the test extra installs moto[server])")
    return found


def aws_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with only the test credentials in reach."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in CLEARED}
    return {**env, **CREDENTIALS, **ISOLATION, "AWS_DEFAULT_REGION": REGION}


class MotoServer:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.endpoint_url + "/", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def start(self) -> MotoServer:
        if self._process is not None:
            return self
        self._process = subprocess.Popen(
            [moto_server_command(), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        try:
            wait_until(lambda: self._answers() or self._process.poll() is not None, 60, "moto_server")  # type: ignore[union-attr]
        except BaseException:
            self.stop()
            raise
        if self._process.poll() is not None:
            self._process = None
            raise RuntimeError(f"moto_server exited at start (port {self.port} taken?)")
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)

    @property
    def running(self) -> bool:
        return self._process is not None

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            region_name=REGION,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    # -- reading back ---------------------------------------------------------------

    def new_bucket(self, prefix: str = "audit") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client("s3").create_bucket(Bucket=name)
        return name

    def objects(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        """Every object under ``prefix``: key -> body (gunzipped when the key ends in .gz)."""
        s3 = self.client("s3")
        out: dict[str, bytes] = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                out[item["Key"]] = gzip.decompress(body) if item["Key"].endswith(".gz") else body
        return out

    def log_events(self, group: str) -> dict[str, list[dict[str, Any]]]:
        """Every event of every stream of ``group``: stream -> [{timestamp, message}], as stored."""
        logs = self.client("logs")
        out: dict[str, list[dict[str, Any]]] = {}
        for page in logs.get_paginator("describe_log_streams").paginate(logGroupName=group):
            for stream in page["logStreams"]:
                name = stream["logStreamName"]
                events: list[dict[str, Any]] = []
                token = None
                while True:
                    kwargs: dict[str, Any] = {
                        "logGroupName": group,
                        "logStreamName": name,
                        "startFromHead": True,
                    }
                    if token:
                        kwargs["nextToken"] = token
                    answer = logs.get_log_events(**kwargs)
                    events.extend(answer["events"])
                    if not answer["events"] or answer.get("nextForwardToken") == token:
                        break
                    token = answer["nextForwardToken"]
                out[name] = events
        return out


@pytest.fixture(name="aws_env")
def aws_env_fixture(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name in CLEARED:
        monkeypatch.delenv(name, raising=False)
    for name, value in {**CREDENTIALS, **ISOLATION}.items():
        monkeypatch.setenv(name, value)
    return aws_environment()


@pytest.fixture(name="moto", scope="session")
def moto_fixture() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server
