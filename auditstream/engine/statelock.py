"""One daemon per checkpoint: an exclusive ``flock`` on ``<checkpoint>.lock`` for the process's life.

Two daemons on one checkpoint both list, both deliver and overwrite each other's progress:
most records arrive twice, and whichever saves last decides what the next start believes.
Kubernetes' ``Recreate`` strategy and systemd's single unit make it unlikely, not
impossible (a second ``auditstream run`` by hand, a backfill started twice with one range).

``flock`` rather than a pid file: the kernel releases the lock when the process dies,
however it dies (SIGKILL, OOM), so a stale lock can never keep the daemon from starting.
The holder's pid is written into the file only to name it in the refusal.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from auditstream.fsutil import PRIVATE_FILE_MODE, ensure_directory


class CheckpointInUse(Exception):
    """Another process holds the checkpoint's lock; the message names the checkpoint and pid."""


def lock_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.name + ".lock")


class CheckpointLock:
    def __init__(self, checkpoint: Path) -> None:
        self.checkpoint = checkpoint
        self.path = lock_path(checkpoint)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`CheckpointInUse`; OSError when it cannot be created."""
        ensure_directory(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise CheckpointInUse(
                f"checkpoint {self.checkpoint} is in use by another auditstream (pid {holder}); "
                "stop that one first, or give this one its own [checkpoint] path "
                "(a backfill: its own --checkpoint)"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.fchmod(fd, PRIVATE_FILE_MODE)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> CheckpointLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
