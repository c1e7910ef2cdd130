"""``auditstream demo``: the emulator in-process, generating live records, and the daemon
printing them as JSON lines on stdout, with metrics on 127.0.0.1:9464. No credentials: the
emulator accepts only its own fake demo key, and nothing leaves the machine."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from auditstream.config import AppConfig, parse_config
from auditstream.emulator import Emulator, EmulatorOptions
from auditstream.engine.engine import RunPlan
from auditstream.ops import startup
from auditstream.ops.runtime import run_daemon

DEMO_LIVE_RECORDS_PER_SECOND = 3.0


def builtin_demo_config() -> AppConfig:
    import tomllib

    text = resources.files("auditstream").joinpath("demo.toml").read_text(encoding="utf-8")
    return parse_config(tomllib.loads(text), source="built-in demo config")


def demo_emulator_options(config: AppConfig) -> EmulatorOptions:
    host, _, port = config.source.endpoint.rpartition(":")
    return EmulatorOptions(
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


async def run_demo(config_path: Path | None = None) -> int:
    config = startup.load(config_path) if config_path else startup.prepare(builtin_demo_config())
    streams = config.streams.stream_names()
    # The emulator's data is new at every start, so the demo's checkpoints are too.
    plan = RunPlan(streams=streams, checkpoint_path=config.checkpoint.path, fresh=True)
    with startup.streaming(config, plan.checkpoint_path):
        async with Emulator(demo_emulator_options(config)):
            return await run_daemon(config, plan)
