"""Running the jobs of a run: bounded, each under its own deadline.

`run_jobs` runs one function per job (a pipeline.Job) on at most `workers` threads at once
(never a thread per machine for a thousand machines), each job independent of the others (no
barrier between steps), and each bounded by its deadline (`deadline_seconds`), counted from
when that job started. The outcome maps each job to the function's return value, or the
exception that ended it (DeadlineExceeded for a job that ran out of time: its connection is
closed so its thread stops waiting on the network).
Ctrl-C (or SIGTERM, see octoboot.interrupts) ends the wait too: jobs still running become
Interrupted and their remote commands are ended on the hosts, jobs not started never start,
and FleetInterrupted carries the outcome of every job.
"""

from __future__ import annotations

import contextlib
import os
import resource
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Protocol, TypeVar

from fabric import Connection

from octoboot.ssh import end_commands

# File descriptors one machine at work may hold: its SSH socket and a jump host's, its log,
# an Octopus connection, and a state file being read or written (its PFX, known_hosts).
FDS_PER_MACHINE = 5
# Kept free for the rest of the run: the report, the last-run record, the terminal.
FDS_SPARE = 8


def workers_for_open_files(workers: int, *, soft_limit: int, open_now: int) -> int:
    """How many of `workers` machines can be at work at once under the open-files limit,
    with open_now descriptors already open (0: not even one)."""
    if soft_limit == resource.RLIM_INFINITY:
        return workers
    return max(0, min(workers, (soft_limit - open_now - FDS_SPARE) // FDS_PER_MACHINE))


def open_files() -> tuple[int, int]:
    """The soft open-files limit, and how many descriptors this process has open."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0], len(os.listdir("/dev/fd"))


# On Ctrl-C, how long to wait for the hosts to confirm that the jobs' commands ended.
STOP_SECONDS = 5.0


class DeadlineExceeded(Exception):
    """A job ran past its deadline."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"did not finish within its deadline of {seconds:.0f} s")
        self.seconds = seconds


class Interrupted(Exception):
    """The run was interrupted (Ctrl-C, SIGTERM) while this job was running or waiting."""

    def __init__(self, started: bool) -> None:
        super().__init__("interrupted" if started else "not started: the run was interrupted")
        self.started = started


class FleetInterrupted(Exception):
    """Ctrl-C or SIGTERM (the __cause__): `results` holds every job's outcome, Interrupted
    for the unfinished."""

    def __init__(self, results: dict[Any, object]) -> None:
        super().__init__("interrupted")
        self.results = results


class Member(Protocol):
    """What the fleet needs of a job (pipeline.Job has it). Jobs are told apart by identity."""

    conn: Connection
    deadline_seconds: float  # counted from when the job starts


J = TypeVar("J", bound=Member)
T = TypeVar("T")


def run_jobs(
    jobs: Sequence[J],
    work: Callable[[J], T],
    *,
    workers: int,
    on_result: Callable[[J, T | BaseException], None] | None = None,
    on_abandon: Callable[[J], None] | None = None,
) -> dict[J, T | BaseException]:
    """work(job) for every job, at most `workers` at once. on_result(job, value or exception)
    is called in this thread as each one ends, so callers can print without interleaving
    (and close what the job holds: only the jobs at work need their descriptors);
    on_abandon(job) when the run stops waiting for a job still at work (its deadline, or
    Ctrl-C), so the job can be told to stop."""
    outcomes: dict[J, T | BaseException] = {}
    starts = _Starts()

    def member(job: J) -> T:
        starts.mark(job)
        return work(job)

    def finish(job: J, value: T | BaseException) -> None:
        outcomes[job] = value
        if on_result:
            on_result(job, value)

    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="fleet")
    futures: dict[Future[T], J] = {pool.submit(member, job): job for job in jobs}
    pending = set(futures)
    try:
        while pending:
            at_work = [futures[f] for f in pending]
            done, pending = wait(
                pending, timeout=starts.next_expiry(at_work), return_when=FIRST_COMPLETED
            )
            for future in done:
                exc = future.exception()
                finish(futures[future], exc if exc is not None else future.result())
            for future in [f for f in pending if starts.expired(futures[f])]:
                pending.discard(future)
                job = futures[future]
                if on_abandon:
                    on_abandon(job)
                finish(job, DeadlineExceeded(job.deadline_seconds))
                job.conn.close()
    except KeyboardInterrupt as interrupt:
        # First stop everything: jobs are told to stop, and their remote commands ended on
        # the hosts, waiting a short while for the hosts to confirm (a second Ctrl-C cuts
        # that wait short; closing the connections ends them too). Then record the
        # outcomes, ignoring further Ctrl-Cs until that is done.
        stopped = [futures[f] for f in pending if not f.cancel()]
        for job in stopped:
            if on_abandon:
                on_abandon(job)
        with contextlib.suppress(KeyboardInterrupt):
            end_commands([job.conn for job in stopped], within=STOP_SECONDS)
        for job in stopped:
            job.conn.close()
        for future in pending:
            job = futures[future]
            with contextlib.suppress(KeyboardInterrupt):
                finish(job, Interrupted(job in stopped and job in starts))
        raise FleetInterrupted(dict(outcomes)) from interrupt
    finally:
        # Jobs cut loose may still be unwinding; do not wait for them.
        pool.shutdown(wait=False, cancel_futures=True)
    return outcomes


class _Starts:
    """When each job started (noted from its own thread), and so when its deadline falls."""

    def __init__(self) -> None:
        self._at: dict[Member, float] = {}
        self._lock = threading.Lock()

    def mark(self, job: Member) -> None:
        with self._lock:
            self._at[job] = time.monotonic()

    def __contains__(self, job: Member) -> bool:
        with self._lock:
            return job in self._at

    def _expiry(self, job: Member) -> float | None:
        with self._lock:
            started = self._at.get(job)
        return None if started is None else started + job.deadline_seconds

    def expired(self, job: Member) -> bool:
        expiry = self._expiry(job)
        return expiry is not None and time.monotonic() >= expiry

    def next_expiry(self, jobs: Iterable[Member]) -> float | None:
        """Seconds until the first of these jobs' deadlines (None: no job)."""
        expiries = [self._expiry(job) for job in jobs]
        known = [e - time.monotonic() for e in expiries if e is not None]
        # Jobs that have not started have no expiry yet: look again soon.
        waits = [*known, 0.5] if None in expiries else known
        return max(0.0, min(waits)) if waits else None
