"""Secrets that every user of the machine can read.

The scrubber keeps secrets out of what the daemon prints; it cannot help when the file the
secret comes from is world-readable (a ``secret_key_file`` left at 0644 by ``echo > file``,
a configuration with an inline token copied into ``/etc`` with the default umask). ssh
refuses such a key; here it is said, naming the key and the file and never the value,
because the file modes that are safe depend on the deployment: Kubernetes mounts Secrets
0440 with ``fsGroup`` and systemd credentials are 0400, both fine; "other" readable is not
fine anywhere. Said by ``check`` (``WARN``), and logged by ``run`` and ``backfill`` at start.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from auditstream.config import AppConfig, interpolate_env
from auditstream.ops.secrets import config_secrets

# ``*_file`` keys that name files holding no secret (certificates, CA bundles).
PUBLIC_FILE_KEYS = frozenset({"ca_file", "cert_file"})


def exposed_secrets(config_path: Path, config: AppConfig, env: dict[str, str] | None = None) -> list[str]:
    """One line per secret that users other than the daemon's can read: a secret file
    readable by "other", and a configuration file readable by "other" that holds secrets
    inline (each named by its key). Unreadable or vanished files are the preflight's
    business, not this one's: they are skipped here."""
    try:
        raw_text = config_path.read_text(encoding="utf-8")
        raw = tomllib.loads(raw_text)
        expanded = interpolate_env(raw, dict(os.environ) if env is None else env, str(config_path))
    except (OSError, ValueError):
        return []
    found: list[str] = []
    for key, value in _leaves(expanded):
        name = key.rsplit(".", 1)[-1]
        if not name.endswith("_file") or name in PUBLIC_FILE_KEYS or not isinstance(value, str):
            continue
        mode = _world_readable_mode(Path(value))
        if mode is not None:
            found.append(
                f"{key}: {value} is readable by every user of this machine (mode {mode:04o}); "
                f"chmod o-rwx {value} (0600, or 0640 with the daemon's group)"
            )
    mode = _world_readable_mode(config_path)
    if mode is not None:
        secrets = config_secrets(config)
        inline = sorted(
            {secrets[value] for key, value in _leaves(raw) if isinstance(value, str) and value in secrets}
        )
        if inline:
            found.append(
                f"{config_path} holds {', '.join(inline)} inline and is readable by every user of this "
                f"machine (mode {mode:04o}); chmod o-rwx {config_path}, or move the secrets to *_file "
                "keys or ${ENV} references"
            )
    return found


def _world_readable_mode(path: Path) -> int | None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    return mode if mode & stat.S_IROTH else None


def _leaves(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _leaves(value, f"{path}[{index}]")
    else:
        yield path, node
