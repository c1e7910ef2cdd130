"""``auditstream demo``: the emulator in-process, generating live records, and the daemon
printing them as JSON lines on stdout, with metrics on 127.0.0.1:9464. No credentials: the
emulator accepts only its own fake demo key, and nothing leaves the machine."""

from __future__ import annotations

import os
import socket
from importlib import resources
from pathlib import Path

from auditstream.config import AppConfig, parse_config
from auditstream.emulator import Emulator, EmulatorOptions
from auditstream.engine.engine import RunPlan
from auditstream.ops import startup
from auditstream.ops.runtime import run_daemon

DEMO_LIVE_RECORDS_PER_SECOND = 3.0
DEMO_LOG_KEY = "demo-log-key.pem"  # in the demo's state directory
# The emulator plays an organisation whose query logs are partly encrypted to its key, and
# some of whose sessions hold credentials: the demo shows them decrypted and masked.
DEMO_ENCRYPTED_FRACTION = 0.1
DEMO_SECRET_FRACTION = 0.05


def builtin_demo_text() -> str:
    return resources.files("auditstream").joinpath("demo.toml").read_text(encoding="utf-8")


def builtin_demo_config() -> AppConfig:
    import tomllib

    return parse_config(tomllib.loads(builtin_demo_text()), source="built-in demo config")


def demo_emulator_options(config: AppConfig) -> EmulatorOptions:
    host, _, port = config.source.endpoint.rpartition(":")
    key = config.normalize.log_private_key_file
    return EmulatorOptions(
        log_key_file=str(key) if key is not None else None,
        encrypted_fraction=DEMO_ENCRYPTED_FRACTION if key is not None else 0.0,
        secret_fraction=DEMO_SECRET_FRACTION,
        host=host,
        port=int(port),
        access_key=config.source.access_key,
        secret_key=config.source.secret_key.get_secret_value(),
        records=200,
        live=DEMO_LIVE_RECORDS_PER_SECOND,
        long_sessions=3,
        long_session_close_within=60.0,
        late_rate=0.05,
        late_max_seconds=20.0,
    )


def _split_host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def port_taken(address: str) -> OSError | None:
    """Why ``address`` cannot be listened on, or None. The demo looks before it binds: gRPC
    reports a taken port as a C++ log line and "set GRPC_VERBOSITY=debug", which names
    neither the demo nor the way out."""
    host, port = _split_host_port(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC and aiohttp bind
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc
    return None


def check_demo_ports(config: AppConfig, source: str, text: str) -> None:
    """The emulator's and the metrics port are free, or an OSError (exit 1) naming the port,
    what it is for and how to move it (``text``: the config's TOML, to tell whether the
    shipped environment variables move it)."""
    wanted = [("the demo's StrongDM API emulator", "[source] endpoint", config.source.endpoint, "API")]
    if config.metrics.listen:
        wanted.append(("the demo's /metrics", "[metrics] listen", config.metrics.listen, "METRICS"))
    for what, key, address, suffix in wanted:
        problem = port_taken(address)
        if problem is None:
            continue
        host, port = _split_host_port(address)
        variable = f"AUDITSTREAM_DEMO_{suffix}"
        move = f"{variable}={host}:{port + 1} make demo" if variable in text else f"set another port in {key}"
        raise OSError(
            f"cannot listen on {address} ({problem.strerror or problem}): that is the port of {what} "
            f"({key} in {source}); stop what listens there (another demo?), or move it: {move}"
        )


def load_demo(config_path: Path | None = None) -> AppConfig:
    """The demo's configuration, prepared, with both of its ports free (else OSError: exit 1)."""
    if config_path is None:
        config = startup.prepare(builtin_demo_config())
        check_demo_ports(config, "the built-in demo config, config/demo.toml", builtin_demo_text())
    else:
        config = startup.load(config_path, say_exposed=False)
        check_demo_ports(config, str(config_path), config_path.read_text(encoding="utf-8", errors="replace"))
    return with_demo_log_key(config)


def with_demo_log_key(config: AppConfig) -> AppConfig:
    """``config`` decrypting with the demo organisation's key, made on first use in the
    demo's state directory (mode 0600): the emulator encrypts part of its queries to it.
    A configuration naming a key of its own keeps it (the emulator then uses that key)."""
    if config.normalize.log_private_key_file is not None:
        return config
    from auditstream.emulator.crypto import generate_private_key, private_key_pem
    from auditstream.formats.settings import NormalizeSettings
    from auditstream.fsutil import PRIVATE_FILE_MODE, ensure_directory

    path = config.checkpoint.path.parent / DEMO_LOG_KEY
    if not path.exists():
        ensure_directory(path.parent)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
        with os.fdopen(descriptor, "wb") as key_file:
            key_file.write(private_key_pem(generate_private_key()))
    normalize = NormalizeSettings.model_validate({**dict(config.normalize), "log_private_key_file": path})
    return config.model_copy(update={"normalize": normalize})


async def run_demo(config: AppConfig) -> int:
    streams = config.streams.stream_names()
    # The emulator's data is new at every start, so the demo's checkpoints are too.
    plan = RunPlan(streams=streams, checkpoint_path=config.checkpoint.path, fresh=True)
    with startup.streaming(config, plan.checkpoint_path):
        async with Emulator(demo_emulator_options(config)):
            return await run_daemon(config, plan)
