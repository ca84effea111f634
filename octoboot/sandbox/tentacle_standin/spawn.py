"""Run a program and collect what it prints, as `subprocess.run` does, without subprocess.

Every Tentacle command is a new process, and subprocess's import (locale and re, signal and
enum, threading, selectors) was a fifth of `import-certificate`'s and `service`'s CPU; the
service's `run` needs it only to open its identity with `openssl`. What subprocess's child
gets, this one gets too: the program found on PATH, stdin/stdout/stderr on pipes, every other
inheritable descriptor closed (close_fds), SIGPIPE and SIGXFSZ back to their default action
(restore_signals: Python ignores them); the same environment and working directory. One
difference: glibc's posix_spawn leaves its own two real-time signals (thread cancellation and
set*id) ignored in the child, which neither openssl nor systemctl uses.
"""

from __future__ import annotations

import _signal
import os
import select
import time


class TimeoutExpired(Exception):
    """The program ran past its timeout; it was killed and waited for."""


def run(argv: list[str], stdin: bytes = b"", *, timeout: float) -> tuple[int, bytes, bytes]:
    """subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout):
    (returncode, stdout, stderr); OSError if argv[0] cannot be started."""
    in_read, in_write = os.pipe()
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    ours = (in_read, in_write, out_read, out_write, err_read, err_write)
    actions: list[tuple[int, ...]] = [
        (os.POSIX_SPAWN_DUP2, in_read, 0),
        (os.POSIX_SPAWN_DUP2, out_write, 1),
        (os.POSIX_SPAWN_DUP2, err_write, 2),
    ]
    actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in _inherited()]  # os.pipe's are not
    try:
        pid = os.posix_spawnp(
            argv[0],
            argv,
            os.environ,
            file_actions=actions,
            setsigdef=(_signal.SIGPIPE, _signal.SIGXFSZ),
        )
    except BaseException:
        for fd in ours:
            os.close(fd)
        raise
    for fd in (in_read, out_write, err_write):
        os.close(fd)
    try:
        out, err = _exchange(in_write, out_read, err_read, stdin, time.monotonic() + timeout)
    except BaseException:  # the deadline, or anything else: as subprocess.run, no orphan
        os.kill(pid, _signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), out, err


def _inherited() -> list[int]:
    """This process's descriptors above 2 that a program it starts would inherit."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            try:
                if os.get_inheritable(fd):
                    found.append(fd)
            except OSError:  # the listing's own descriptor, closed by now
                pass
    return found


def _exchange(
    to_stdin: int, stdout: int, stderr: int, data: bytes, deadline: float
) -> tuple[bytes, bytes]:
    """Write data to the program's stdin and read its stdout and stderr to their ends."""
    output: dict[int, list[bytes]] = {stdout: [], stderr: []}
    poller = select.poll()
    for fd in output:
        poller.register(fd, select.POLLIN)
    if data:
        poller.register(to_stdin, select.POLLOUT)
    else:
        os.close(to_stdin)
    open_fds = set(output) | ({to_stdin} if data else set())
    sent = 0
    try:
        while open_fds:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutExpired
            for fd, _ in poller.poll(left * 1000):
                if fd == to_stdin:
                    try:
                        sent += os.write(fd, data[sent : sent + 65536])
                    except BrokenPipeError:  # it stopped reading: as subprocess, not an error
                        sent = len(data)
                    if sent >= len(data):
                        poller.unregister(fd)
                        open_fds.discard(fd)
                        os.close(fd)
                    continue
                chunk = os.read(fd, 65536)
                if chunk:
                    output[fd].append(chunk)
                else:
                    poller.unregister(fd)
                    open_fds.discard(fd)
    finally:
        for fd in open_fds | {stdout, stderr}:
            os.close(fd)
    return b"".join(output[stdout]), b"".join(output[stderr])
