"""The row of a machine the runner stopped waiting for (Ctrl-C, SIGTERM, its deadline) says
how long it had been at work, not 0.0 s."""

import threading
import time
from pathlib import Path

from octoboot.fleet import DeadlineExceeded, Interrupted
from octoboot.inventory import load_inventory
from octoboot.pipeline import Job, Pipeline
from octoboot.report import State
from octoboot.run import _result_of
from octoboot.runlog import Masker

AT_WORK = 0.1  # seconds the step is kept busy before the runner gives up on it


class Log:
    path = Path("unused.log")

    def write(self, text: str, *, echo: bool = True) -> None:
        pass


class Hangs(Pipeline):
    STEPS = ("hang",)

    def __init__(self, job: Job, entered: threading.Event, release: threading.Event) -> None:
        super().__init__(job)
        self.entered, self.release = entered, release

    def step_hang(self) -> tuple[str, str]:
        self.entered.set()
        self.release.wait(30)
        return "ok", ""


def abandoned_row(tmp_path: Path, reason: Exception):
    (tmp_path / "qa.toml").write_text(
        'environment = "QA"\nroles = ["web"]\n[[machines]]\nname = "web01"\n'
    )
    machine = load_inventory(tmp_path).select("qa")[0]
    job = Job(job_id=1, machine=machine, conn=None, log=Log(), deadline_seconds=60, options=None)
    entered, release = threading.Event(), threading.Event()
    started = time.monotonic()
    worker = threading.Thread(target=Hangs(job, entered, release).run)
    worker.start()
    try:
        assert entered.wait(10)
        release.wait(AT_WORK)  # the machine is at work for a while
        row = _result_of(job, reason, Masker())
        at_work = time.monotonic() - started
    finally:
        job.cancelled.set()
        release.set()
        worker.join(10)
    return row, at_work


def test_an_interrupted_row_shows_how_long_the_machine_was_at_work(tmp_path):
    row, at_work = abandoned_row(tmp_path, Interrupted(started=True))
    assert row.state == State.INTERRUPTED and row.failed_step == "hang"
    assert AT_WORK <= row.seconds <= at_work


def test_a_timed_out_row_shows_how_long_the_machine_was_at_work(tmp_path):
    row, at_work = abandoned_row(tmp_path, DeadlineExceeded(60))
    assert row.state == State.TIMED_OUT
    assert AT_WORK <= row.seconds <= at_work
