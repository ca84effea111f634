"""Running one function per machine across a fleet: bounded, each under its own deadline.

FleetGroup is a fabric.Group whose members run on at most `workers` threads at once (the
default 32; never a thread per machine for a thousand machines), each member's whole job
independent of the others (no barrier between steps), and each bounded by a deadline
counted from when that member started. The outcome is Fabric's GroupResult: connection →
the job's return value, or the exception that ended it (DeadlineExceeded for a member that
ran out of time: its connection is closed so its thread stops waiting on the network).
Ctrl-C (or SIGTERM, see octoboot.interrupts) ends the wait too: members still running
become Interrupted and their remote commands are ended on the hosts, members not started
never start, and FleetInterrupted carries the GroupResult of everything so far.
`run`, `sudo`, `put` and `get` work as on any Fabric group, through the same pool.
"""

from __future__ import annotations

import contextlib
import os
import resource
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from fabric import Connection, Group, GroupResult
from fabric.exceptions import GroupException

from octoboot.ssh import end_commands

DEFAULT_WORKERS = 32
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


# On Ctrl-C, how long to wait for the hosts to confirm that the members' commands ended.
STOP_SECONDS = 5.0


class DeadlineExceeded(Exception):
    """A member's job ran past its deadline."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"did not finish within its deadline of {seconds:.0f} s")
        self.seconds = seconds


class Interrupted(Exception):
    """The run was interrupted (Ctrl-C, SIGTERM) while this member was running or waiting."""

    def __init__(self, started: bool) -> None:
        super().__init__("interrupted" if started else "not started: the run was interrupted")
        self.started = started


class FleetInterrupted(Exception):
    """Ctrl-C or SIGTERM (the __cause__): `results` holds every member's outcome,
    Interrupted for the unfinished."""

    def __init__(self, results: GroupResult) -> None:
        super().__init__("interrupted")
        self.results = results


class FleetGroup(Group):
    def __init__(
        self,
        *hosts: Any,
        workers: int = DEFAULT_WORKERS,
        deadline: float | Callable[[Connection], float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*hosts, **kwargs)
        self.workers = max(1, workers)
        self.deadline = deadline

    @classmethod
    def from_connections(cls, connections: Any, **options: Any) -> FleetGroup:
        group = cls(**options)
        group.extend(connections)
        return group

    def _deadline_of(self, cxn: Connection) -> float | None:
        return self.deadline(cxn) if callable(self.deadline) else self.deadline

    def _do(self, method: str, *args: Any, **kwargs: Any) -> GroupResult:
        """Group.run/sudo/put/get: like ThreadingGroup, raise GroupException if any failed."""
        results = self.call(lambda cxn: getattr(cxn, method)(*args, **kwargs))
        if results.failed:
            raise GroupException(results)
        return results

    def call(
        self,
        job: Callable[[Connection], Any],
        *,
        on_result: Callable[[Connection, Any], None] | None = None,
        on_abandon: Callable[[Connection], None] | None = None,
    ) -> GroupResult:
        """job(connection) for every member. on_result(connection, value or exception) is
        called in this thread as each one ends, so callers can print without interleaving;
        on_abandon(connection) when the run stops waiting for a member still at work (its
        deadline, or Ctrl-C), so the job can be told to stop."""
        results = GroupResult()
        started: dict[Connection, float] = {}
        lock = threading.Lock()

        def member(cxn: Connection) -> Any:
            with lock:
                started[cxn] = time.monotonic()
            return job(cxn)

        def finish(cxn: Connection, value: Any) -> None:
            results[cxn] = value
            if on_result:
                on_result(cxn, value)

        def abandon(cxn: Connection, value: Exception) -> None:
            if on_abandon:
                on_abandon(cxn)
            finish(cxn, value)
            cxn.close()

        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="fleet")
        futures: dict[Future, Connection] = {pool.submit(member, cxn): cxn for cxn in self}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(
                    pending,
                    timeout=self._next_expiry(futures, pending, started, lock),
                    return_when=FIRST_COMPLETED,
                )
                for future in done:
                    exc = future.exception()
                    finish(futures[future], exc if exc is not None else future.result())
                for future in self._expired(futures, pending, started, lock):
                    pending.discard(future)
                    cxn = futures[future]
                    abandon(cxn, DeadlineExceeded(self._deadline_of(cxn) or 0))
        except KeyboardInterrupt as interrupt:
            # First stop everything: members are told to stop, and their remote commands
            # ended on the hosts, waiting a short while for the hosts to confirm (a second
            # Ctrl-C cuts that wait short; closing the connections ends them too). Then
            # record the outcomes, ignoring further Ctrl-Cs until that is done.
            stopped = [futures[f] for f in pending if not f.cancel()]
            for cxn in stopped:
                if on_abandon:
                    on_abandon(cxn)
            with contextlib.suppress(KeyboardInterrupt):
                end_commands(stopped, within=STOP_SECONDS)
            for cxn in stopped:
                cxn.close()
            for future in pending:
                cxn = futures[future]
                with contextlib.suppress(KeyboardInterrupt):
                    finish(cxn, Interrupted(cxn in stopped and cxn in started))
            raise FleetInterrupted(results) from interrupt
        finally:
            # Members cut loose may still be unwinding; do not wait for them.
            pool.shutdown(wait=False, cancel_futures=True)
        return results

    def _expiry(self, cxn: Connection, started: dict[Connection, float]) -> float | None:
        seconds = self._deadline_of(cxn)
        if seconds is None or cxn not in started:
            return None
        return started[cxn] + seconds

    def _next_expiry(self, futures, pending, started, lock) -> float | None:
        if self.deadline is None:
            return None
        with lock:
            expiries = [self._expiry(futures[f], started) for f in pending]
        known = [e - time.monotonic() for e in expiries if e is not None]
        # Members that have not started have no expiry yet: look again soon.
        waits = [*known, 0.5] if None in expiries else known
        return max(0.0, min(waits)) if waits else None

    def _expired(self, futures, pending, started, lock) -> list[Future]:
        now = time.monotonic()
        with lock:
            return [
                f
                for f in pending
                if (expiry := self._expiry(futures[f], started)) is not None and now >= expiry
            ]
