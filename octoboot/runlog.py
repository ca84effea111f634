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

from octoboot.settings import loaded_secrets

MASK = "********"


class Masker:
    """Replaces every known secret value in text, whatever code path it came by: by default
    every secret loaded so far (settings.loaded_secrets), including those loaded after the
    masker was made."""

    def __init__(self, secrets: Iterable[str] | None = None) -> None:
        self._fixed = None if secrets is None else frozenset(secrets)
        self._known: frozenset[str] = frozenset()
        self._secrets: list[str] = []

    def __call__(self, text: str) -> str:
        for secret in self._current():
            text = text.replace(secret, MASK)
        return text

    def _current(self) -> list[str]:
        known = loaded_secrets() if self._fixed is None else self._fixed
        if known != self._known:  # longest first: a secret may contain a shorter one
            self._known = known
            self._secrets = sorted((s for s in known if s), key=len, reverse=True)
        return self._secrets


def new_run_dir(state_dir: Path, command: str) -> Path:
    runs = state_dir / "runs"
    runs.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    run_dir = runs / f"{stamp}-{command}"
    run_dir.mkdir(mode=0o700)
    return run_dir


class MachineLog:
    """One machine's log file; optionally echoes to the terminal as lines come."""

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
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._file = os.fdopen(fd, "a", encoding="utf-8")

    def write(self, text: str, *, echo: bool = True) -> None:
        text = self._mask(text)
        stamp = f"{time.monotonic() - self._start:8.3f} "
        with self._lock:
            for line in text.rstrip("\n").splitlines() or [""]:
                self._file.write(stamp + line + "\n")
            self._file.flush()
        if echo and self._echo:
            self._echo(text.rstrip("\n"))

    def close(self) -> None:
        with self._lock:
            self._file.close()
