"""What happened per machine: the result records, the table, the JSON, the exit code."""

from __future__ import annotations

import functools
import json
import signal
from collections import Counter
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

from tabulate import tabulate

from octoboot.files import write_atomic


class State(StrEnum):
    OK = "ok"  # a read-only job succeeded (exec, status)
    CHANGED = "changed"
    UNCHANGED = "unchanged"
    WOULD_CHANGE = "would change"  # a dry run found something to do
    FAILED = "failed"
    UNREACHABLE = "unreachable"
    TIMED_OUT = "timed out"
    INTERRUPTED = "interrupted"
    SKIPPED = "skipped"
    UNKNOWN = "unknown"  # status: Octopus has the machine, no inventory file lists it


# Exit codes (README, "Exit codes"): failed, unreachable and stopped are bits, so 5 means
# failed and unreachable, 9 failed and the rest skipped (--max-fail).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNREACHABLE = 4
EXIT_STOPPED = 8
# Stopped by a signal: 128 + its number, as a shell reports it.
EXIT_INTERRUPTED = 128 + signal.SIGINT  # Ctrl-C: 130
EXIT_TERMINATED = 128 + signal.SIGTERM  # SIGTERM (a cancelled CI job): 143


@dataclass
class StepResult:
    name: str
    status: str  # changed / unchanged / ok / failed / would change
    detail: str = ""
    seconds: float = 0.0


@dataclass
class MachineResult:
    job_id: int
    machine: str
    environment: str
    state: State = State.SKIPPED
    failed_step: str | None = None
    octopus_id: str | None = None
    thumbprint: str | None = None
    seconds: float = 0.0
    api_wait_seconds: float = 0.0  # of `seconds`, waiting for the Octopus API (rate limit)
    reason: str = ""
    log: str | None = None
    steps: list[StepResult] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)  # what `status` and `exec` found

    def summary_line(self) -> str:
        """One line for the terminal when the machine finishes."""
        where = f" at {self.failed_step}" if self.failed_step else ""
        why = f": {self.reason}" if self.reason else ""
        return f"[{self.job_id}] {self.machine}: {self.state}{where} ({self.duration()}){why}"

    def duration(self) -> str:
        """How long it took, and how much of it went waiting for the Octopus API, if any."""
        waited = f", {self.api_wait_seconds:.1f}s API wait" if self.api_wait_seconds else ""
        return f"{self.seconds:.1f}s{waited}"


@dataclass
class RunReport:
    command: str
    results: list[MachineResult]
    wall_seconds: float
    run_dir: str | None = None
    interrupted: signal.Signals | None = None  # the signal that stopped the run (Ctrl-C: SIGINT)
    # SSH host keys seen for the first time and trusted; kept: written to known_hosts.
    # Many at once where machines are not new means known_hosts was lost.
    host_keys_learned: int = 0
    host_keys_kept: bool = True
    # The run stopped starting machines (--max-fail): the ones not started are skipped.
    stopped: bool = False

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 128 + self.interrupted
        states = {r.state for r in self.results}
        code = EXIT_OK
        # A machine skipped because another run held it was not done: a failure. One
        # skipped because the run stopped early is told by EXIT_STOPPED instead.
        not_done = {State.FAILED, State.UNKNOWN} | (set() if self.stopped else {State.SKIPPED})
        if states & not_done:
            code |= EXIT_FAILED
        if states & {State.UNREACHABLE, State.TIMED_OUT, State.INTERRUPTED}:
            code |= EXIT_UNREACHABLE
        if self.stopped:
            code |= EXIT_STOPPED
        return code

    def counts(self) -> dict[str, int]:
        return dict(Counter(str(r.state) for r in self.results))

    def to_json(self) -> str:
        data = {
            "command": self.command,
            "exit_code": self.exit_code,
            "wall_seconds": round(self.wall_seconds, 3),
            "counts": self.counts(),
            "host_keys_learned": self.host_keys_learned,
            "run_dir": self.run_dir,
            "machines": [asdict(r) for r in self.results],
        }
        return json.dumps(data, indent=2, default=str)

    def table(self) -> str:
        rows = [
            (
                r.job_id,
                r.machine,
                r.environment,
                r.state,
                r.failed_step or "",
                r.octopus_id or "",
                short_thumbprint(r.thumbprint),
                r.duration(),
                one_line(r.reason),
            )
            for r in self.results
        ]
        headers = ["job", "machine", "environment", "state", "failed step", "octopus id",
                   "thumbprint", "duration", "reason"]  # fmt: skip
        return "\n".join([table_text(rows, headers), "", *self.totals()])

    @functools.cached_property
    def text(self) -> str:
        """The table, as report.txt has it and the terminal shows it: made once (tabulate
        takes milliseconds per hundred machines, at the end of every run)."""
        return self.table()

    def totals(self) -> list[str]:
        """The lines under the table: counts per state, wall time, exit code, logs."""
        counts = ", ".join(f"{n} {state}" for state, n in sorted(self.counts().items()))
        lines = [
            f"{len(self.results)} machine(s): {counts or 'none'}; "
            f"wall time {self.wall_seconds:.1f}s; exit code {self.exit_code}"
        ]
        if self.host_keys_learned:
            kept = "added to known_hosts" if self.host_keys_kept else "for this run only"
            lines.append(
                f"{self.host_keys_learned} SSH host key(s) seen for the first time and "
                f"trusted ({kept}): unexpected if these machines were known before"
            )
        if self.run_dir:
            lines.append(f"logs: {self.run_dir}")
        return lines

    def write(self, run_dir: Path) -> None:
        """report.json and report.txt, each written whole (StateWriteError if not)."""
        write_atomic(run_dir / "report.json", self.to_json() + "\n")
        write_atomic(run_dir / "report.txt", self.text + "\n")


def short_thumbprint(thumbprint: str | None) -> str:
    return f"{thumbprint[:8]}…" if thumbprint else ""


def one_line(text: str, limit: int = 100) -> str:
    """text on one line, control characters escaped, cut to limit characters."""
    line = printable(" ".join(text.split()))
    return line if len(line) <= limit else line[: limit - 1] + "…"


# C0 and C1 control characters and DEL, and the bidirectional overrides (which reorder what
# a terminal shows): a host's output must not move the cursor, retitle or clear the
# terminal, or hide text in the table.
_CONTROLS = [*range(0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_ESCAPES = {c: f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}" for c in _CONTROLS}


def printable(text: str, keep: str = "") -> str:
    """text with control characters (but those in keep, e.g. "\\n\\t") shown as escapes."""
    return text.translate(_escapes_but(keep))


@functools.cache
def _escapes_but(keep: str) -> dict[int, str]:
    return {c: e for c, e in _ESCAPES.items() if chr(c) not in keep}


def table_text(rows: list[tuple], headers: list[str]) -> str:
    """A table whose every cell is printable (hosts and Octopus fill some of them)."""
    return tabulate([[printable(str(cell)) for cell in row] for row in rows], headers=headers)
