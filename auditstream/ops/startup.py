"""The one start-up path ``run``, ``backfill``, ``check`` and ``demo`` share.

Each entry point used to do its own set-up, and the differences were bugs: backfill never
registered the configuration's secrets, so its log lines were never scrubbed. Here, in one
order for all: read and validate the configuration, set up logging, register every secret
for scrubbing; then, for the commands that stream, try every file the configuration names,
take the checkpoint's lock, and tune the garbage collector once start-up is over.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import structlog

from auditstream.config import AppConfig, ConfigError, load_config
from auditstream.engine.statelock import CheckpointLock
from auditstream.ops.exposure import exposed_secrets
from auditstream.ops.gctune import tune_for_pipeline
from auditstream.ops.logging import configure_logging
from auditstream.ops.preflight import file_problems
from auditstream.ops.secrets import config_secrets, register_secrets

log = structlog.get_logger("auditstream.startup")


def prepare(config: AppConfig, log_level: str | None = None) -> AppConfig:
    """Logging as configured (at ``log_level`` instead, when given: ``check`` silences it),
    every secret registered for scrubbing; returns ``config``."""
    configure_logging(log_level or config.logging.level, config.logging.format)
    register_secrets(config_secrets(config))
    return config


def load(path: Path, *, say_exposed: bool = True) -> AppConfig:
    """Read, validate and :func:`prepare` the configuration (ConfigError: exit 2), and warn
    about each secret other users of the machine can read (``say_exposed``: the demo's
    emulator pair is no secret)."""
    config = prepare(load_config(path))
    if say_exposed:
        for line in exposed_secrets(path, config):
            log.warning("secret readable by other users", detail=line)
    return config


@contextmanager
def streaming(config: AppConfig, checkpoint: Path) -> Iterator[CheckpointLock]:
    """Around a run or a backfill: files checked, the checkpoint locked, the GC tuned.

    Raises ConfigError (exit 2) listing every unusable file, one line each, and
    CheckpointInUse (exit 1) when another process holds the checkpoint.
    """
    problems = file_problems(config, checkpoint)
    if problems:
        raise ConfigError("\n".join(str(problem) for problem in problems))
    with CheckpointLock(checkpoint) as lock:
        tune_for_pipeline()
        yield lock
