"""Background processes of the sandbox, recorded so that they can be ended by PID later.

A PID alone is not an identity: after a crash the number may belong to someone else. We
record the process's start time (field 22 of /proc/PID/stat) with it and only ever signal a
process whose PID and start time both match what we recorded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Recorded:
    """A process the sandbox started: its PID and its start time in clock ticks since boot."""

    pid: int
    start_ticks: int

    def to_json(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, int]) -> Recorded:
        return cls(pid=int(data["pid"]), start_ticks=int(data["start_ticks"]))


def start_ticks(pid: int) -> int | None:
    """The start time of PID, or None if there is no such process (or it is a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def spawn(argv: Sequence[str], *, log: Path, env: Mapping[str, str] | None = None) -> Recorded:
    """Start argv detached from our session (it outlives this process), output to log."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
    ticks = start_ticks(proc.pid)
    if ticks is None:
        proc.wait()
        raise RuntimeError(f"{argv[0]} exited at once (exit {proc.returncode}); see {log}")
    # The child is reaped by whoever outlives it; keep Popen from warning that it still runs.
    proc.returncode = 0
    return Recorded(proc.pid, ticks)


def is_alive(rec: Recorded) -> bool:
    return start_ticks(rec.pid) == rec.start_ticks


def terminate(
    records: Iterable[Recorded], *, first: int = signal.SIGTERM, grace: float = 5.0
) -> None:
    """Send `first` to every recorded process still alive, wait up to grace seconds for all
    of them together, then SIGKILL what is left. Gone processes are skipped."""
    for sig in (first, signal.SIGKILL):
        alive = [r for r in records if is_alive(r)]
        for rec in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(rec.pid, sig)
        deadline = time.monotonic() + grace
        while alive and time.monotonic() < deadline:
            for rec in alive:
                _reap(rec.pid)
            alive = [r for r in alive if is_alive(r)]
            if alive:
                time.sleep(0.02)
        if not alive:
            return
    raise RuntimeError(f"processes {[r.pid for r in alive]} did not end after SIGKILL")


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our own child, so it does not stay a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
