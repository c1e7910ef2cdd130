"""The filesystem operations that state and sinks share: private directories, directory
fsync, atomic replacement, and "can I write here?" answered by trying.

Permission bits cannot answer that last question: ``os.access`` says yes to root for a 0500
directory, yes for a read-only mount's directory on some systems, and cannot tell that a
path's "directory" is a regular file until something tries to create beneath it. So every
check here creates (and removes) a real file where the program will write.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


class NotWritable(OSError):
    """A path the program must write cannot be written; the message says where and why."""


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def fsync_directory(directory: Path) -> None:
    """Make a rename or create inside ``directory`` durable (POSIX needs the directory synced)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_directory(directory: Path, mode: int = PRIVATE_DIR_MODE) -> None:
    """Create ``directory`` (and its parents) with exactly ``mode``, whatever the umask.

    ``mkdir(mode=...)`` is filtered by the umask (so 0700 under umask 000 is still 0700,
    but 0750 under umask 077 becomes 0700, and the other way round a umask of 000 leaves
    intermediate directories world-writable); directories this call creates are chmod'ed to
    ``mode`` explicitly. Existing directories are left as the operator made them.
    """
    missing: list[Path] = []
    current = directory
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    if current.exists() and not current.is_dir():
        raise NotWritable(f"{current} is not a directory")
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=mode)
        os.chmod(path, mode)


def check_directory_writable(directory: Path, mode: int = PRIVATE_DIR_MODE) -> None:
    """Raise :class:`NotWritable` unless a file can be created in ``directory``.

    Creates the directory (``mode``) when it is missing, then creates and removes a
    temporary file in it: the only test that root, read-only mounts, ACLs and a regular file
    standing where the directory should be all answer truthfully.
    """
    try:
        ensure_directory(directory, mode)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test-"):
            pass
    except NotWritable:
        raise
    except OSError as exc:
        raise NotWritable(f"directory {directory} is not writable ({_reason(exc)})") from None


def check_file_appendable(path: Path, dir_mode: int = PRIVATE_DIR_MODE) -> None:
    """Raise :class:`NotWritable` unless ``path`` can be opened for appending.

    An existing file is opened for append (and closed, unchanged); a missing one needs a
    writable directory, checked by :func:`check_directory_writable`.
    """
    if path.is_dir():
        raise NotWritable(f"{path} is a directory, not a file")
    if path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        except OSError as exc:
            raise NotWritable(f"cannot open {path} for writing ({_reason(exc)})") from None
        os.close(fd)
        return
    check_directory_writable(path.parent, dir_mode)


def atomic_write(path: Path, data: bytes, mode: int = PRIVATE_FILE_MODE) -> None:
    """Replace ``path`` with ``data`` so that a reader sees the old or the new file, never a mix.

    Temporary file in the same directory, ``mode`` set before any byte is written, fsync,
    rename over ``path``, fsync of the directory.
    """
    directory = path.parent
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    fsync_directory(directory)
