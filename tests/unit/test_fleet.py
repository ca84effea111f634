"""fleet.run_jobs: bounded parallelism and per-job deadlines, outcomes keyed by the job (the
jobs here hold stand-ins for connections: nothing connects)."""

import threading
import time
from dataclasses import dataclass, field

from octoboot.fleet import DeadlineExceeded, run_jobs


class Conn:
    closed = 0

    def close(self) -> None:
        self.closed += 1


@dataclass(eq=False)
class Member:
    """A job as the fleet sees it (pipeline.Job): its connection and its deadline."""

    host: str
    deadline_seconds: float = 60.0
    conn: Conn = field(default_factory=Conn)


def members(n, deadline=60.0):
    return [Member(f"host{i}", deadline) for i in range(n)]


def test_every_job_runs_and_outcomes_are_keyed_by_the_job():
    jobs = members(5)
    outcomes = run_jobs(jobs, lambda job: job.host.upper(), workers=2)
    assert outcomes == {job: job.host.upper() for job in jobs}


def test_no_more_than_workers_jobs_at_once():
    running, peak, lock = 0, 0, threading.Lock()
    release = threading.Event()

    def work(job):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        release.wait(0.05)
        with lock:
            running -= 1

    run_jobs(members(12), work, workers=3)
    assert peak == 3


def test_an_exception_stays_with_its_job():
    def work(job):
        if job.host == "host1":
            raise ValueError("boom")
        return "ok"

    jobs = members(3)
    outcomes = run_jobs(jobs, work, workers=3)
    assert isinstance(outcomes[jobs[1]], ValueError)
    assert outcomes[jobs[0]] == outcomes[jobs[2]] == "ok"


def test_a_job_past_its_deadline_is_cut_loose_and_the_others_finish():
    stuck = threading.Event()
    seen, abandoned = [], []

    def work(job):
        if job.host == "host0":
            stuck.wait(30)  # hangs until the test ends
        return "done"

    jobs = members(4, deadline=0.2)
    started = time.monotonic()
    outcomes = run_jobs(
        jobs,
        work,
        workers=4,
        on_result=lambda job, value: seen.append(job.host),
        on_abandon=abandoned.append,
    )
    elapsed = time.monotonic() - started
    stuck.set()
    assert isinstance(outcomes[jobs[0]], DeadlineExceeded)
    assert all(outcomes[job] == "done" for job in jobs[1:])
    assert seen[-1] == "host0" and len(seen) == 4
    # told to stop, and its connection closed so that its thread stops waiting on it
    assert abandoned == [jobs[0]] and jobs[0].conn.closed == 1
    assert [job.conn.closed for job in jobs[1:]] == [0, 0, 0]
    assert elapsed < 10  # not the 30 s the job would have taken


def test_deadline_counts_from_when_a_job_starts_not_from_the_run():
    # one worker: the third job starts ~0.3 s in, yet its 0.3 s deadline is its own
    def work(job):
        time.sleep(0.15)
        return "done"

    outcomes = run_jobs(members(3, deadline=0.3), work, workers=1)
    assert all(v == "done" for v in outcomes.values())


def test_the_pool_is_sized_to_the_open_files_limit():
    import resource

    from octoboot.fleet import FDS_PER_MACHINE, FDS_SPARE, workers_for_open_files

    assert workers_for_open_files(32, soft_limit=1024, open_now=10) == 32
    room = 200 - 12 - FDS_SPARE
    assert workers_for_open_files(100, soft_limit=200, open_now=12) == room // FDS_PER_MACHINE
    assert workers_for_open_files(8, soft_limit=12 + FDS_SPARE + FDS_PER_MACHINE, open_now=12) == 1
    assert workers_for_open_files(8, soft_limit=20, open_now=18) == 0
    assert workers_for_open_files(8, soft_limit=resource.RLIM_INFINITY, open_now=18) == 8
