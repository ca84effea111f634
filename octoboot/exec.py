"""`exec`: one command on each machine, as root, through the same runner as everything
else (its own module, named after its command, as each pipeline is).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import ClassVar

from octoboot.errors import ConfigError
from octoboot.pipeline import Pipeline, StepFailed, last_lines
from octoboot.report import RunReport, State, one_line
from octoboot.run import Run, RunOptions, Selection
from octoboot.settings import Settings


def exec_command(
    selection: Selection,
    options: RunOptions = RunOptions(),
    settings: Settings | None = None,
    *,
    command: str,
) -> RunReport:
    """Run one shell command (as root) on each machine; its output is in the logs and JSON."""
    if not command.strip():
        raise ConfigError("no command to run: give --command 'CMD' (or -- CMD)")
    options = replace(options, dry_run=False)
    return Run("exec", Exec, selection, options, settings, ExecOptions(command)).execute()


@dataclass(frozen=True)
class ExecOptions:
    """exec's own flag: the command."""

    command: str


class Exec(Pipeline[ExecOptions]):
    """One command on each machine, as root, through the same runner as everything else.
    Its stdin is empty (a command that reads it gets end-of-input at once); its output, of
    any size, streams into the machine's log, and the report keeps a head and a tail of it
    with its byte count (runlog.CommandOutput). The same head and tail are shown as they
    come (Job.on_output: `name: line` in a parallel run); the machine's row says how it
    ended, not what it printed."""

    STEPS: ClassVar = ("connect", "exec")
    RECORDS_OUTCOME = False  # looking at machines must not change what a retry re-runs
    # The operator's own command, often run to look at a machine another run is busy with.
    TAKES_LOCKS = False

    def step_exec(self) -> tuple[str, str]:
        command = self.job.options.command  # its stdin is empty (tentacle.supervised)
        out, err = (self.job.log.output(s, self._shower(s)) for s in ("stdout", "stderr"))
        result = self.remote(command, check=False, output=(out, err))
        stdout, stderr = out.excerpt(), err.excerpt()
        self.job.result.facts.update(
            exit_code=str(result.exited),
            stdout=stdout,
            stderr=stderr,
            stdout_bytes=str(out.size),
            stderr_bytes=str(err.size),
        )
        if result.exited != 0:
            raise StepFailed(one_line(last_lines(stderr or stdout, result.exited)))
        return "ok", "exit 0"

    def _shower(self, stream: str) -> Callable[[str], None] | None:
        show = self.job.on_output
        return None if show is None else lambda text: show(self.job, stream, text)

    def final_state(self, statuses: list[str]) -> State:
        return State.OK
