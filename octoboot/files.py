"""Writing files that must never be seen half-written: identities, known_hosts, the last-run
record, reports, the sandbox's keys. One way to do it, private (0600) unless told otherwise:

    write_atomic(path, data)    a temporary file beside path, written, fsynced, renamed over it

A crash or a full disk leaves either the old file or the new one, never a truncated one (a
0-byte PFX made an environment unusable), and the temporary file is removed on failure.
Failures are StateWriteError: one line naming the file and the cause.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

from octoboot.errors import ConfigError, OctobootError

PRIVATE = 0o600
# The start-of-run check writes this much: a state directory that cannot take it cannot
# take a run's logs and identities either.
_CHECK_BYTES = 64 * 1024


class StateWriteError(OctobootError):
    """A file could not be written (full disk, read-only, ...); nothing partial was left."""

    def __init__(self, path: Path, exc: OSError) -> None:
        self.reason = describe(exc)
        super().__init__(f"cannot write {path}: {self.reason}")
        self.path = path


def describe(exc: OSError) -> str:
    """An OSError in words, with what to do for the usual causes."""
    what = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{what} (free some space and run again)"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"{what} (make it writable, or set OCTOBOOT_STATE_DIR to another folder)"
    return what


def write_atomic(
    path: Path, data: bytes | str, *, mode: int = PRIVATE, replace: bool = True
) -> None:
    """Give path the content data, all at once: a reader (or a crash) sees the old file or
    the new one. replace=False never overwrites: FileExistsError if path exists (another
    process made it first). StateWriteError if it cannot be written."""
    if isinstance(data, str):
        data = data.encode()
    try:
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise StateWriteError(path, exc) from None
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        if replace:
            os.replace(temp, path)
        else:
            os.link(temp, path)  # fails if path exists: the first writer wins
    except FileExistsError:
        raise
    except OSError as exc:
        raise StateWriteError(path, exc) from None
    finally:
        if fd >= 0:
            os.close(fd)
        Path(temp).unlink(missing_ok=True)  # gone after a rename; a leftover after a link


def open_append(path: Path) -> int:
    """A private file descriptor that appends to path (created 0600), for streams like logs
    that cannot be written in one piece."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE)


def append(fd: int, data: bytes) -> None:
    """Append data in full, or not at all: on failure (a full disk) the file is cut back to
    where it was, so it never ends in half a line. OSError on failure."""
    start = os.lseek(fd, 0, os.SEEK_END)
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError:
        with contextlib.suppress(OSError):  # the write's error is the one to report
            os.ftruncate(fd, start)
        raise


def check_writable(state_dir: Path) -> None:
    """Before a run: the state directory exists (made 0700 if not) and takes a write.
    A read-only or full one is a ConfigError, one line. The probe file has a name of its
    own, so two runs starting at once never remove each other's."""
    where = f"the state directory {state_dir}"
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, probe = tempfile.mkstemp(dir=state_dir, prefix=".octoboot-write-check.")
    except OSError as exc:
        raise ConfigError(f"cannot write to {where}: {describe(exc)}") from None
    try:
        append(fd, bytes(_CHECK_BYTES))
        os.fsync(fd)
    except OSError as exc:
        raise ConfigError(f"cannot write to {where}: {describe(exc)}") from None
    finally:
        os.close(fd)
        Path(probe).unlink(missing_ok=True)
