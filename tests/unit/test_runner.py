"""run.Run without hosts: a pipeline whose one step touches nothing, over an inventory of
unopened connections. What the runner gives each job (its options, its deadline), and the
report it builds once, with the rows a run adds through `extra_rows`; a last-run record
the disk cannot take."""

from __future__ import annotations

import errno
import json
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import pytest

from octoboot import files
from octoboot.errors import ConfigError
from octoboot.pipeline import Pipeline
from octoboot.report import MachineResult, RunReport, State
from octoboot.run import Run, RunOptions, Selection, last_failures
from octoboot.settings import Settings, load_settings


@dataclass(frozen=True)
class LookOptions:
    word: str


class Look(Pipeline[LookOptions]):
    """Notes what its job was given; connects to nothing."""

    STEPS: ClassVar = ("look",)
    DEADLINE = 30.0
    seen: ClassVar[dict[str, tuple[LookOptions, float]]] = {}

    def step_look(self) -> tuple[str, str]:
        Look.seen[self.machine.name] = (self.job.options, self.job.deadline_seconds)
        return "ok", self.job.options.word


class CountedReport(RunReport):
    writes = 0

    def write(self, run_dir: Path) -> None:
        CountedReport.writes += 1
        super().write(run_dir)


class LookRun(Run[LookOptions]):
    REPORT = CountedReport

    def extra_rows(self, first_id: int, *, interrupted: bool) -> list[MachineResult]:
        return [MachineResult(first_id, "ghost", "QA", State.UNKNOWN, reason="only elsewhere")]


def project(folder: Path) -> Settings:
    machines = folder / "machines"
    machines.mkdir()
    (machines / "qa.toml").write_text(
        'environment = "QA"\nroles = ["web"]\n\n[ssh]\ndeadline = 900\n\n'
        '[[machines]]\nname = "web01"\n\n[[machines]]\nname = "web02"\ndeadline = 5\n'
    )
    return load_settings(
        {"OCTOBOOT_MACHINES_DIR": str(machines), "OCTOBOOT_STATE_DIR": str(folder / "state")},
        None,
    )


def run(folder: Path, **options) -> tuple[RunReport, list[str]]:
    lines: list[str] = []
    Look.seen.clear()
    CountedReport.writes = 0
    options = RunOptions(parallel=True, console=lines.append, **options)
    report = LookRun(
        "look", Look, Selection(env="qa"), options, project(folder), LookOptions("hello")
    ).execute()
    return report, lines


def test_each_job_gets_the_runs_options_and_its_own_deadline(tmp_path):
    report, _ = run(tmp_path)
    assert [r.state for r in report.results[:2]] == [State.UNCHANGED, State.UNCHANGED]
    # the pipeline's own bound caps the inventory's 900 s; a shorter inventory deadline wins
    assert Look.seen == {"web01": (LookOptions("hello"), 30.0), "web02": (LookOptions("hello"), 5)}


@pytest.mark.parametrize("workers, together", [(2, ["web01", "web02"]), (1, [])])
def test_parallel_without_workers_runs_as_many_at_once_as_the_settings_say(
    tmp_path, workers, together
):
    met: list[str] = []
    both = threading.Barrier(2, timeout=1)

    class Meet(Look):
        def step_look(self) -> tuple[str, str]:
            try:  # passes only if the other machine is at work at the same time
                both.wait()
                met.append(self.machine.name)
            except threading.BrokenBarrierError:
                pass
            return "ok", "met"

    settings = replace(project(tmp_path), workers=workers)
    options = RunOptions(parallel=True, console=lambda line: None)  # no --workers
    LookRun("look", Meet, Selection(env="qa"), options, settings, LookOptions("hi")).execute()
    assert sorted(met) == together


def test_deadline_flag_is_every_jobs_deadline(tmp_path):
    run(tmp_path, deadline=120.0)
    assert {name: seconds for name, (_, seconds) in Look.seen.items()} == {
        "web01": 120.0,
        "web02": 120.0,
    }


def test_extra_rows_join_the_report_which_is_built_and_written_once(tmp_path):
    report, lines = run(tmp_path)
    assert isinstance(report, CountedReport) and CountedReport.writes == 1
    assert [(r.job_id, r.machine) for r in report.results] == [
        (1, "web01"),
        (2, "web02"),
        (3, "ghost"),
    ]
    assert any("ghost" in line and "only elsewhere" in line for line in lines)
    assert report.run_dir is not None
    written = json.loads((Path(report.run_dir) / "report.json").read_text())
    assert [m["machine"] for m in written["machines"]] == ["web01", "web02", "ghost"]


def test_a_last_run_record_the_disk_cannot_take_is_one_line_and_the_old_one_stays(
    tmp_path, monkeypatch
):
    record = tmp_path / "state" / "last-run" / "qa.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"command": "look", "run_dir": "earlier", "failed": ["web02"]}))
    before = record.read_text()
    write = os.write

    def full_at_last_run(fd: int, data) -> int:
        if "/last-run/" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write(fd, data)

    monkeypatch.setattr(files.os, "write", full_at_last_run)
    report, lines = run(tmp_path)
    assert [r.state for r in report.results[:2]] == [State.UNCHANGED, State.UNCHANGED]
    assert report.run_dir is not None
    assert (Path(report.run_dir) / "report.json").exists()  # the run's report is still written
    said = [line for line in lines if "last-run" in line]
    assert said == [
        f"octoboot: --retry-failed will not know this run: cannot write {record}: "
        "No space left on device (free some space and run again)"
    ]
    assert record.read_text() == before and os.listdir(record.parent) == ["qa.json"]


def test_a_last_run_record_that_cannot_be_read_is_one_line_and_the_report_comes_back(tmp_path):
    record = tmp_path / "state" / "last-run" / "qa.json"
    record.mkdir(parents=True)  # a folder where the record belongs: reading it is EISDIR
    report, lines = run(tmp_path)
    assert [r.state for r in report.results[:2]] == [State.UNCHANGED, State.UNCHANGED]
    assert report.run_dir is not None
    assert (Path(report.run_dir) / "report.json").exists()
    said = [line for line in lines if "last-run" in line]
    assert said == [
        f"octoboot: --retry-failed will not know this run: cannot read {record}: Is a directory"
    ]
    with pytest.raises(ConfigError, match=f"^cannot read {record}: Is a directory$"):
        last_failures(tmp_path / "state", "qa")
