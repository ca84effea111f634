"""What happened per machine: the result records, the table, the JSON, the exit code."""

from __future__ import annotations

import json
import signal
from collections import Counter
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

from tabulate import tabulate


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


# Exit codes (README, "Exit codes"): failed and unreachable are bits, so 5 means both.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNREACHABLE = 4
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
    reason: str = ""
    log: str | None = None
    steps: list[StepResult] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)  # what `status` and `exec` found

    def summary_line(self) -> str:
        """One line for the terminal when the machine finishes."""
        where = f" at {self.failed_step}" if self.failed_step else ""
        why = f": {self.reason}" if self.reason else ""
        return f"[{self.job_id}] {self.machine}: {self.state}{where} ({self.seconds:.1f}s){why}"


@dataclass
class RunReport:
    command: str
    results: list[MachineResult]
    wall_seconds: float
    run_dir: str | None = None
    interrupted: signal.Signals | None = None  # the signal that stopped the run (Ctrl-C: SIGINT)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 128 + self.interrupted
        states = {r.state for r in self.results}
        code = EXIT_OK
        if states & {State.FAILED, State.UNKNOWN}:
            code |= EXIT_FAILED
        if states & {State.UNREACHABLE, State.TIMED_OUT, State.INTERRUPTED}:
            code |= EXIT_UNREACHABLE
        return code

    def counts(self) -> dict[str, int]:
        return dict(Counter(str(r.state) for r in self.results))

    def to_json(self) -> str:
        data = {
            "command": self.command,
            "exit_code": self.exit_code,
            "wall_seconds": round(self.wall_seconds, 3),
            "counts": self.counts(),
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
                f"{r.seconds:.1f}s",
                one_line(r.reason),
            )
            for r in self.results
        ]
        headers = ["job", "machine", "environment", "state", "failed step", "octopus id",
                   "thumbprint", "duration", "reason"]  # fmt: skip
        return "\n".join([tabulate(rows, headers=headers), "", *self.totals()])

    def totals(self) -> list[str]:
        """The lines under the table: counts per state, wall time, exit code, logs."""
        counts = ", ".join(f"{n} {state}" for state, n in sorted(self.counts().items()))
        lines = [
            f"{len(self.results)} machine(s): {counts or 'none'}; "
            f"wall time {self.wall_seconds:.1f}s; exit code {self.exit_code}"
        ]
        if self.run_dir:
            lines.append(f"logs: {self.run_dir}")
        return lines

    def write(self, run_dir: Path) -> None:
        (run_dir / "report.json").write_text(self.to_json() + "\n")
        (run_dir / "report.txt").write_text(self.table() + "\n")


def short_thumbprint(thumbprint: str | None) -> str:
    return f"{thumbprint[:8]}…" if thumbprint else ""


def one_line(text: str, limit: int = 100) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
