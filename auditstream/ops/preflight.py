"""Every local file the configuration names, tried before anything is listed.

A CA bundle that does not exist, a sink path under a regular file, a checkpoint directory
nobody can write: each used to surface mid-run, from deep inside a sink's start or the
first save, as a traceback with exit 1 (which a Kubernetes Job retries six times). Found
here, each is one line naming the config key and the file, and exit 2, from ``run``,
``backfill`` and ``check`` alike.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from auditstream.config import AppConfig
from auditstream.engine.checkpoint import CheckpointError, CheckpointStore
from auditstream.fsutil import PRIVATE_DIR_MODE, NotWritable, check_directory_writable, check_file_appendable
from auditstream.sinks.deadletter import default_dead_letter_path


@dataclass(frozen=True)
class FileProblem:
    key: str  # the config key path, e.g. "sinks[1] (siem).tls"
    detail: str  # what is wrong and how to fix it, naming the file

    def __str__(self) -> str:
        return f"{self.key}: {self.detail}"


def _source_problems(config: AppConfig) -> list[FileProblem]:
    ca_file = config.source.ca_file
    if ca_file is None or config.source.insecure:
        return []
    try:
        ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        return [FileProblem("source.ca_file", f"cannot load CA bundle {ca_file}: {reason}")]
    return []


def _sink_problems(config: AppConfig) -> list[FileProblem]:
    problems: list[FileProblem] = []
    state_dir = config.checkpoint.path.parent
    for index, sink in enumerate(config.sinks):
        where = f"sinks[{index}] ({sink.name})"
        try:
            sink.tls.ssl_context()
        except ValueError as exc:
            problems.append(FileProblem(f"{where}.tls", str(exc)))
        dead_letter = sink.dead_letter_path or default_dead_letter_path(state_dir, sink.name)
        files = {"dead_letter_path": (dead_letter, PRIVATE_DIR_MODE), **sink.written_files()}
        for key, (path, dir_mode) in files.items():
            try:
                check_file_appendable(path, dir_mode)
            except NotWritable as exc:
                problems.append(FileProblem(f"{where}.{key}", f"{exc}; fix it or set another {key}"))
    return problems


def checkpoint_problems(path: Path) -> list[FileProblem]:
    """The checkpoint's directory must take new files and the file, if any, must load."""
    try:
        check_directory_writable(path.parent)
    except NotWritable as exc:
        return [
            FileProblem(
                "checkpoint.path",
                f"{exc}; fix its permissions or set [checkpoint] path to a writable, persistent location",
            )
        ]
    try:
        CheckpointStore(path).load()
    except CheckpointError as exc:
        return [FileProblem("checkpoint.path", str(exc))]
    return []


def file_problems(config: AppConfig, checkpoint: Path) -> list[FileProblem]:
    """Everything wrong with the files ``config`` names (empty when all is well)."""
    return [*_source_problems(config), *_sink_problems(config), *checkpoint_problems(checkpoint)]
