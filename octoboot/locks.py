"""Locks between octoboot runs, in <state>/locks/.

A run that changes machines holds each machine's lock until it ends; a second run on the
same machines waits a little (WAIT_SECONDS), then reports those machines skipped, naming the
run that holds them. Read-only runs (`status`, `--dry-run`) take none. Short sections that
read, change and rewrite a shared file (known_hosts, the last-run record) hold a lock too, so
two runs never lose each other's changes.

The locks are Linux open-file-description record locks (fcntl F_OFD_SETLK) on one file,
`octoboot.lock`, one byte per key:
- the kernel drops them when the holder's process ends, however it ends: a crashed or
  killed run never leaves a stale lock;
- they belong to the open file, not to the process (as classic POSIX locks do), so two runs
  in one process exclude each other too;
- one descriptor per run, where flock on a file per machine would hold a thousand for a
  thousand machines.

Who holds the machines is written beside it, in `run-<pid>-<token>.json` (pid, start time,
command, machines), removed when the run ends; files of processes that no longer exist are
ignored and cleaned up.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import json
import os
import secrets
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from octoboot.files import PRIVATE, StateWriteError, write_atomic

WAIT_SECONDS = 10.0  # how long a run waits for machines another run holds
_POLL_SECONDS = 0.2
# Taking a run's machines is one step under this key, so two runs started together do not
# each take half of them.
_ACQUIRE = "acquire"


class Locks:
    """One run's locks; `release()` (or the end of the process) frees them all."""

    def __init__(self, state_dir: Path, command: str) -> None:
        self.dir = state_dir / "locks"
        self.command = command
        self.machines: set[str] = set()  # held, lower-cased
        self._fd: int | None = None
        self._opening = threading.Lock()
        self._info = self.dir / f"run-{os.getpid()}-{secrets.token_hex(4)}.json"
        self._started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    # --- machines, held for the run ---------------------------------------------------------

    def acquire_machines(
        self,
        names: Iterable[str],
        *,
        wait: float = WAIT_SECONDS,
        on_wait: Callable[[str], None] = lambda line: None,
    ) -> dict[str, str]:
        """Take every machine's lock, waiting up to `wait` seconds for those another run
        holds. Returns the machines still held elsewhere then: name → who holds them."""
        pending = {name.lower(): name for name in names}
        deadline = time.monotonic() + wait
        told = False
        while True:
            with self.held(_ACQUIRE):
                taken = [key for key in pending if self._try_lock(f"machine:{key}")]
                if taken:
                    self.machines.update(taken)
                    self._write_info()
                for key in taken:
                    del pending[key]
                if not pending or time.monotonic() >= deadline:
                    holders = self._holders()
                    return {
                        name: f"{holders.get(key, 'another octoboot run')} holds them"
                        for key, name in pending.items()
                    }
                if not told:
                    holders = self._holders()
                    runs = sorted({holders.get(key, "another octoboot run") for key in pending})
                    on_wait(
                        f"waiting up to {wait:g} s for {', '.join(pending.values())}: "
                        f"{'; '.join(runs)} holds them"
                    )
                    told = True
            time.sleep(_POLL_SECONDS)

    def release(self) -> None:
        """Free everything this run holds (closing the file frees the locks)."""
        with self._opening:
            if self._fd is not None:
                self._info.unlink(missing_ok=True)
                os.close(self._fd)
                self._fd = None
        self.machines.clear()

    # --- short sections ---------------------------------------------------------------------

    @contextlib.contextmanager
    def held(self, key: str) -> Iterator[None]:
        """Hold key's lock (waiting for it) for the duration of the block. Not exclusive
        between threads of one run: callers keep their own thread lock where they need one."""
        fd, offset = self._file(), _offset(key)
        _fcntl_lock(fd, fcntl.F_OFD_SETLKW, fcntl.F_WRLCK, offset)
        try:
            yield
        finally:
            _fcntl_lock(fd, fcntl.F_OFD_SETLK, fcntl.F_UNLCK, offset)

    # --- internals --------------------------------------------------------------------------

    def _file(self) -> int:
        with self._opening:
            if self._fd is None:
                path = self.dir / "octoboot.lock"
                try:
                    self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
                    self._fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE)
                except OSError as exc:
                    raise StateWriteError(path, exc) from None
            return self._fd

    def _try_lock(self, key: str) -> bool:
        try:
            _fcntl_lock(self._file(), fcntl.F_OFD_SETLK, fcntl.F_WRLCK, _offset(key))
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise
        return True

    def _write_info(self) -> None:
        info = {
            "pid": os.getpid(),
            "started": self._started,
            "command": self.command,
            "machines": sorted(self.machines),
        }
        write_atomic(self._info, json.dumps(info))

    def _holders(self) -> dict[str, str]:
        """Lower-cased machine name → "another octoboot run (pid N, started T)", from the
        info files of live processes; those of dead ones are removed."""
        holders: dict[str, str] = {}
        for path in sorted(self.dir.glob("run-*.json")):
            if path == self._info:
                continue
            try:
                info = json.loads(path.read_text())
                pid, started, machines = info["pid"], info["started"], info["machines"]
            except (OSError, ValueError, KeyError, TypeError):
                continue  # being replaced, or not ours to judge
            if not _alive(pid):
                path.unlink(missing_ok=True)
                continue
            for key in machines:
                holders[key] = f"another octoboot run (pid {pid}, started {started})"
        return holders


def _offset(key: str) -> int:
    # A byte per key at a hashed offset (56 bits: collisions are not a practical concern).
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:7], "big")


# struct flock on Linux: short l_type, short l_whence, off_t l_start, off_t l_len,
# pid_t l_pid (0 for OFD locks), padded to 32 bytes.
_FLOCK = "hhqqi4x"


def _fcntl_lock(fd: int, command: int, kind: int, offset: int) -> None:
    fcntl.fcntl(fd, command, struct.pack(_FLOCK, kind, os.SEEK_SET, offset, 1, 0))


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
