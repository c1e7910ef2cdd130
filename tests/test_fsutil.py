"""fsutil answers "can I write here?" by trying, so root, read-only places and a file where a
directory should be all get the truthful answer."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from auditstream.fsutil import (
    NotWritable,
    atomic_write,
    check_directory_writable,
    check_file_appendable,
    ensure_directory,
)

NOBODY = 65534


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_regular_file_where_the_directory_should_be_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("not a directory")
    with pytest.raises(NotWritable, match="not a directory"):
        check_directory_writable(blocker / "sub")
    with pytest.raises(NotWritable, match="not a directory"):
        check_file_appendable(blocker / "events.jsonl")


def test_a_directory_where_the_file_should_be_is_refused(tmp_path: Path) -> None:
    (tmp_path / "events.jsonl").mkdir()
    with pytest.raises(NotWritable, match="is a directory"):
        check_file_appendable(tmp_path / "events.jsonl")


def test_missing_directories_are_created_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        ensure_directory(tmp_path / "a" / "b")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a") == 0o700
    assert _mode(tmp_path / "a" / "b") == 0o700


def test_existing_directories_keep_their_mode(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    ensure_directory(tmp_path)
    assert _mode(tmp_path) == 0o755


def test_atomic_write_sets_the_mode_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    old = os.umask(0)
    try:
        atomic_write(target, b"one")
        atomic_write(target, b"two")
    finally:
        os.umask(old)
    assert target.read_bytes() == b"two"
    assert _mode(target) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def _check_as(uid: int | None, directory: Path) -> str | None:
    """Run both checks in a forked child that has dropped to ``uid`` (no exec: the child
    needs no access to the interpreter's files); the NotWritable message, or None."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop privileges, check, report, exit without cleanup handlers
        code = 0
        try:
            os.close(read_end)
            if uid is not None:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            try:
                check_directory_writable(directory)
                check_file_appendable(directory / "events.jsonl")
            except NotWritable as exc:
                os.write(write_end, str(exc).encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return message or None


def test_a_directory_the_running_user_cannot_write_is_refused() -> None:
    """Checked as an unprivileged user: root would pass a 0500 directory, which is the
    point of checking by trying, and of testing as someone permission bits apply to. Under
    /tmp rather than tmp_path, whose parents are private to root."""
    base = Path(tempfile.mkdtemp(prefix="fsutil-"))
    try:
        os.chmod(base, 0o755)
        target = base / "readonly"
        target.mkdir()
        os.chmod(target, 0o500)
        uid = None
        if os.geteuid() == 0:
            uid = NOBODY
            os.chown(target, NOBODY + 1, NOBODY + 1)  # someone else's: nobody gets the "other" bits
        assert _check_as(uid, target) == f"directory {target} is not writable (Permission denied)"
        os.chmod(target, 0o777)  # the control: the same user may write once the bits allow it
        assert _check_as(uid, target) is None
    finally:
        shutil.rmtree(base)
