"""Where a run writes: a folder per run, a log file per machine, secrets masked everywhere.

<state>/runs/<UTC time>-<command>/<machine>.log    each command, its output, exit code
<state>/runs/<UTC time>-<command>/report.json|txt  the report
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from octoboot.files import append, describe, open_append

MASK = "********"


class Masker:
    """Replaces every known secret value in text, whatever code path it came by."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text


def new_run_dir(state_dir: Path, command: str) -> Path:
    runs = state_dir / "runs"
    runs.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    run_dir = runs / f"{stamp}-{command}"
    run_dir.mkdir(mode=0o700)
    return run_dir


class MachineLog:
    """One machine's log file; optionally echoes to the terminal as lines come.

    A log that cannot be written (full disk) never ends in half a line, and never raises
    where the machine's work is: `failure` says why, and the pipeline fails that machine
    with it."""

    def __init__(
        self,
        path: Path,
        masker: Masker,
        *,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.path = path
        self._mask = masker
        self._echo = echo
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self.failure: str | None = None
        self._fd: int | None = None
        try:
            self._fd = open_append(path)
        except OSError as exc:
            self.failure = f"cannot write its log {path}: {describe(exc)}"

    def write(self, text: str, *, echo: bool = True) -> None:
        text = self._mask(text)
        stamp = f"{time.monotonic() - self._start:8.3f} "
        lines = "".join(stamp + line + "\n" for line in text.rstrip("\n").splitlines() or [""])
        with self._lock:
            if self._fd is not None and self.failure is None:
                try:
                    append(self._fd, lines.encode(errors="backslashreplace"))
                except OSError as exc:
                    self.failure = f"cannot write its log {self.path}: {describe(exc)}"
        if echo and self._echo:
            self._echo(text.rstrip("\n"))

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
