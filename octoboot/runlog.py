"""Where a run writes: a folder per run, a log file per machine, secrets masked everywhere.

<state>/runs/<UTC time>-<command>/<machine>.log    each command, its output, exit code
<state>/runs/<UTC time>-<command>/report.json|txt  the report

A command's output of any size (`exec`) streams into the log line by line as it comes
(`<seconds> stdout| <line>`), and only a head and a tail of it, with its byte count, stay in
memory for the report (CommandOutput).
"""

from __future__ import annotations

import codecs
import datetime as dt
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from octoboot.files import append, describe, open_append
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

    def safe_cut(self, text: str) -> int:
        """An index at which text can be cut so that no secret, whole or begun at its end,
        is cut in two: text[:cut] can be masked on its own, text[cut:] goes with what
        comes next."""
        secrets = self._current()
        cut = len(text) - max((len(s) for s in secrets), default=1) + 1
        moved = True
        while moved:
            moved = False
            for secret in secrets:
                start = text.find(secret, max(0, cut - len(secret) + 1))
                if start != -1 and start < cut:
                    cut, moved = start, True
        return max(cut, 0)

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
        # Opened at the first write and closed when the machine ends, so that only the
        # machines at work hold a descriptor (a run may have thousands of machines).
        self._fd: int | None = None

    def _append(self, text: str) -> None:
        """Append text whole, or note why the log cannot be written (call with the lock held)."""
        if self.failure is not None:
            return
        try:
            if self._fd is None:
                self._fd = open_append(self.path)
            append(self._fd, text.encode(errors="backslashreplace"))
        except OSError as exc:
            self.failure = f"cannot write its log {self.path}: {describe(exc)}"

    def write(self, text: str, *, echo: bool = True) -> None:
        text = self._mask(text)
        stamp = f"{time.monotonic() - self._start:8.3f} "
        lines = "".join(stamp + line + "\n" for line in text.rstrip("\n").splitlines() or [""])
        with self._lock:
            self._append(lines)
        if echo and self._echo:
            self._echo(text.rstrip("\n"))

    def write_output(self, stream: str, text: str) -> None:
        """Lines of a command's output, already masked, each under the time and stream."""
        prefix = f"{time.monotonic() - self._start:8.3f} {stream}| "
        body = text[:-1] if text.endswith("\n") else text
        with self._lock:
            self._append(prefix + body.replace("\n", "\n" + prefix) + "\n")

    def output(self, stream: str, show: Callable[[str], None] | None = None) -> CommandOutput:
        """A sink for one stream (stdout, stderr) of a command's output, of any size; its
        head and tail are shown as they come to show (default: where the log echoes)."""
        return CommandOutput(self, stream, self._mask, show or self._echo)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


# What of a command's output the report keeps: this many characters from its start and as
# many from its end (the log has all of it).
EXCERPT_CHARS = 4096
# A line longer than this goes to the log in pieces, so that no line is held whole.
LINE_CHARS = 65536


class CommandOutput:
    """One stream of one command, of any size: fed the bytes as they come, it writes them to
    the machine's log line by line, masked, and keeps only a head and a tail of them and
    their count. Linear in the output's size, bounded in memory. In a sequential run (echo)
    the head is shown as it comes, and the tail at the end."""

    def __init__(
        self,
        log: MachineLog,
        stream: str,
        mask: Masker,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.log, self.stream = log, stream
        self.size = 0  # bytes received
        self._mask, self._echo = mask, echo
        self._decoder = codecs.getincrementaldecoder("utf-8")("backslashreplace")
        self._pending: list[str] = []  # the line begun, not yet written
        self._pending_chars = 0
        self._head = self._tail = ""
        self._chars = 0  # characters written (masked)

    def feed(self, data: bytes) -> None:
        self.size += len(data)
        self._add(self._decoder.decode(data))

    def close(self) -> None:
        self._add(self._decoder.decode(b"", final=True))
        if self._pending:
            self._write("".join(self._pending))
            self._pending, self._pending_chars = [], 0
        rest = self.excerpt()[len(self._head) :]
        if rest and self._echo:
            self._echo(rest.rstrip("\n"))

    def excerpt(self) -> str:
        """All of it when short; else its head and tail around a line that says how much
        was left out and where the rest is."""
        if self._chars <= 2 * EXCERPT_CHARS:
            return self._head + self._tail[len(self._tail) - (self._chars - len(self._head)) :]
        left_out = self._chars - 2 * EXCERPT_CHARS
        return (
            f"{self._head}\n[... {self.size} bytes in all; {left_out} characters left out "
            f"here, the whole {self.stream} is in {self.log.path} ...]\n{self._tail}"
        )

    def _add(self, text: str) -> None:
        if not text:
            return
        end = text.rfind("\n") + 1
        if end:
            self._write("".join([*self._pending, text[:end]]))
            self._pending, self._pending_chars = [], 0
            text = text[end:]
        if text:
            self._pending.append(text)
            self._pending_chars += len(text)
        if self._pending_chars > LINE_CHARS:
            line = "".join(self._pending)
            cut = self._mask.safe_cut(line) or len(line)
            self._write(line[:cut])
            self._pending = [line[cut:]]
            self._pending_chars = len(self._pending[0])

    def _write(self, text: str) -> None:
        masked = self._mask(text)
        self.log.write_output(self.stream, masked)
        if len(self._head) < EXCERPT_CHARS:
            shown = masked[: EXCERPT_CHARS - len(self._head)]
            self._head += shown
            if self._echo:
                self._echo(shown.rstrip("\n"))
        self._tail = (self._tail + masked[-EXCERPT_CHARS:])[-EXCERPT_CHARS:]
        self._chars += len(masked)
