"""Running one function per machine across a fleet: bounded, each under its own deadline.

FleetGroup is a fabric.Group whose members run on at most `workers` threads at once (the
default 32; never a thread per machine for a thousand machines), each member's whole job
independent of the others (no barrier between steps), and each bounded by a deadline
counted from when that member started. The outcome is Fabric's GroupResult: connection →
the job's return value, or the exception that ended it (DeadlineExceeded for a member that
ran out of time: its connection is closed so its thread stops waiting on the network).
Ctrl-C ends the wait too: members still running become Interrupted, members not started
never start, and FleetInterrupted carries the GroupResult of everything so far.
`run`, `sudo`, `put` and `get` work as on any Fabric group, through the same pool.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import resource
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from fabric import Connection, Group, GroupResult
from fabric.exceptions import GroupException

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


class DeadlineExceeded(Exception):
    """A member's job ran past its deadline."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"did not finish within its deadline of {seconds:.0f} s")
        self.seconds = seconds


class Interrupted(Exception):
    """The run was interrupted (Ctrl-C) while this member was running or waiting."""

    def __init__(self, started: bool) -> None:
        super().__init__("interrupted" if started else "not started: the run was interrupted")
        self.started = started


class FleetInterrupted(Exception):
    """Ctrl-C: `results` holds every member's outcome, Interrupted for the unfinished."""

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
        # When each started member runs out of time, soonest first: a heap, so that the
        # wait after each of N members ends costs log N, not a look at all N.
        expiries: list[tuple[float, int, Connection]] = []
        order = itertools.count()  # ties broken by start order, never by Connection
        lock = threading.Lock()

        def member(cxn: Connection) -> Any:
            now = time.monotonic()
            seconds = self._deadline_of(cxn)
            with lock:
                started[cxn] = now
                if seconds is not None:
                    heapq.heappush(expiries, (now + seconds, next(order), cxn))
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
        future_of = {cxn: future for future, cxn in futures.items()}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(
                    pending,
                    timeout=self._next_wake(expiries, len(started) < len(futures), lock),
                    return_when=FIRST_COMPLETED,
                )
                for future in done:
                    exc = future.exception()
                    finish(futures[future], exc if exc is not None else future.result())
                for future in self._expired(expiries, future_of, pending, lock):
                    pending.discard(future)
                    cxn = futures[future]
                    abandon(cxn, DeadlineExceeded(self._deadline_of(cxn) or 0))
        except KeyboardInterrupt:
            # First stop everything, with no I/O that a second Ctrl-C could cut short; then
            # record the outcomes, ignoring further Ctrl-Cs until that is done.
            stopped = [futures[f] for f in pending if not f.cancel()]
            for cxn in stopped:
                if on_abandon:
                    on_abandon(cxn)
                cxn.close()
            for future in pending:
                cxn = futures[future]
                with contextlib.suppress(KeyboardInterrupt):
                    finish(cxn, Interrupted(cxn in stopped and cxn in started))
            raise FleetInterrupted(results) from None
        finally:
            # Members cut loose may still be unwinding; do not wait for them.
            pool.shutdown(wait=False, cancel_futures=True)
        return results

    def _next_wake(self, expiries, waiting: bool, lock) -> float | None:
        """Seconds until the soonest expiry; members that have not started have none yet:
        look again soon."""
        if self.deadline is None:
            return None
        with lock:
            soonest = expiries[0][0] - time.monotonic() if expiries else None
        waits = [w for w in (soonest, 0.5 if waiting else None) if w is not None]
        return max(0.0, min(waits)) if waits else None

    def _expired(self, expiries, future_of, pending: set[Future], lock) -> list[Future]:
        """The pending members whose time is up (taken off the heap; ended ones too)."""
        now, found = time.monotonic(), []
        with lock:
            while expiries and expiries[0][0] <= now:
                future = future_of[heapq.heappop(expiries)[2]]
                if future in pending:
                    found.append(future)
        return found
