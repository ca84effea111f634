"""Health checks for many machines with few Health tasks.

A real Octopus Server runs at most a few tasks at once (its task cap, 5 by default); every
other task waits `Queued`, the customer's deployments included. One Health task per machine
would queue a hundred tasks for a hundred machines. So one HealthCoordinator per Octopus
gathers the machines that reach their health step close together (GATHER_SECONDS), starts
one Health task for all of them (`MachineIds`), polls it, and hands each machine its own
result: its HealthStatus, and when it is not healthy the reason from the task's log. At
most MAX_OWN_TASKS of octoboot's tasks are queued or running at once; machines arriving
meanwhile wait for the next one, all together.

With `per_machine` (OCTOBOOT_HEALTH_TASKS=per-machine) each machine gets a Health task of
its own as soon as it asks, and Octopus' task cap alone queues them: octoboot's way before
shared tasks, kept to compare with (benchmarks/bootstrap.py).

A task is polled ever less often (POLL_FIRST_SECONDS growing to POLL_MAX_SECONDS) until one
of octoboot's tasks has ended; from then on a running task is next looked at when it should
end: its start (the server's StartTime less its QueueTime, so no clock offset between us
matters) plus the run time of the last one. Found done late, a task keeps its machines, and
those waiting for a free task slot, waiting for nothing.

Each machine still waits only until its own deadline (or until its run gives up on it):
its result is then a TimeoutError, and the task goes on for the others. While a task is
`Queued` behind other tasks, each of its machines is told (`note`) how many are ahead.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from octoboot.octopus import (
    HEALTHY,
    TASK_DONE,
    OctopusClient,
    OctopusError,
    Resource,
    health_status,
)
from octoboot.ratelimit import api_budget

# octoboot's own Health tasks queued or running at once, per Octopus: the rest of the
# server's task cap stays free for deployments.
MAX_OWN_TASKS = 2
# How long the machines reaching health are gathered before their task starts.
GATHER_SECONDS = 0.5
# Polling a task: the first wait, growing to the longest (Octopus.Client polls every 4 s).
POLL_FIRST_SECONDS = 0.25
POLL_MAX_SECONDS = 2.0
# Bounds of the seconds a Health task may spend on one machine (its MachineTimeout).
MACHINE_TIMEOUT_MIN, MACHINE_TIMEOUT_MAX = 5, 60

Note = Callable[[str], None]


@dataclass(frozen=True)
class HealthResult:
    task_id: str
    task_state: str
    health_status: str  # the machine's own: Healthy, Unavailable, ...
    healthy: bool
    reason: str = ""  # why not healthy, from the task's log
    error: str = ""  # the task's own ErrorMessage

    # The task's log shows this machine's own check (always so when the task succeeded).
    checked: bool = True

    @property
    def task_failed_itself(self) -> bool:
        """The task did not succeed and never got to this machine's check: it failed on its
        own (e.g. Octopus restarted under it, which fails the tasks it was running), and the
        machine's status predates it. A shared task that failed because another machine was
        unhealthy did check this one: its own outcome is the answer."""
        return self.task_state != "Success" and not self.checked


@dataclass(eq=False)
class _Request:
    machine_id: str
    name: str
    environment_id: str | None  # None: a worker
    collection: str  # "machines" or "workers"
    deadline: float  # monotonic
    note: Note
    done: threading.Event = field(default_factory=threading.Event)
    result: HealthResult | None = None
    error: Exception | None = None
    task_id: str | None = None
    state: str = "not started"
    abandoned: bool = False

    def finish(self, result: HealthResult | None = None, error: Exception | None = None) -> None:
        self.result, self.error = result, error
        self.done.set()


@dataclass(eq=False)
class _Watch:
    """One of octoboot's tasks in flight, and the machines waiting for it."""

    task: Resource
    requests: list[_Request]
    next_poll: float
    delay: float
    posted: float  # time.monotonic() when it was started: Octopus' QueueTime, here
    queued_behind: int | None = None

    @property
    def deadline(self) -> float:
        return max(r.deadline for r in self.requests)


class HealthCoordinator:
    """Runs the health checks of one Octopus; `check` is called from each machine's thread."""

    def __init__(
        self,
        octopus: OctopusClient,
        *,
        gather_seconds: float = GATHER_SECONDS,
        first_poll_seconds: float = POLL_FIRST_SECONDS,
        max_tasks: int = MAX_OWN_TASKS,
        per_machine: bool = False,
        announce: Note | None = None,
    ) -> None:
        self._octopus = octopus
        self._per_machine = per_machine
        self._gather = 0 if per_machine else gather_seconds
        self._first_poll = first_poll_seconds
        self._max_tasks = max_tasks
        self._announce = announce  # run-wide lines (a task queued), for quiet parallel runs
        self._cond = threading.Condition()
        self._pending: list[_Request] = []
        self._first_pending_at = 0.0
        self._watches: list[_Watch] = []  # touched by the coordinator's thread only
        self._task_seconds: float | None = None  # how long the last finished task ran
        self._thread: threading.Thread | None = None
        self._closed = False

    # --- the machines' side -----------------------------------------------------------

    def check(
        self,
        machine_id: str,
        name: str,
        environment_id: str | None,
        *,
        deadline: float,
        cancelled: threading.Event,
        note: Note = lambda text: None,
        collection: str = "machines",
    ) -> HealthResult:
        """Wait for this machine's health, checked together with whoever else asks now.
        TimeoutError when its deadline comes first or `cancelled` is set; OctopusError when
        Octopus refused or failed the task."""
        request = _Request(machine_id, name, environment_id, collection, deadline, note)
        with self._cond:
            if self._closed:
                raise RuntimeError("the health coordinator is closed")
            if not self._pending:
                self._first_pending_at = time.monotonic()
            self._pending.append(request)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="health-coordinator", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()
        while not request.done.wait(max(0.0, min(0.2, deadline - time.monotonic()))):
            if cancelled.is_set() or time.monotonic() >= deadline:
                self._abandon(request)
                if request.done.is_set():  # the result came in meanwhile
                    break
                task = request.task_id
                if cancelled.is_set():
                    raise TimeoutError(f"gave up waiting for {task or 'a health task to start'}")
                if task is None:  # octoboot's own tasks were all busy until the deadline
                    raise TimeoutError("no health task had started for it yet")
                raise TimeoutError(f"{task} still {request.state}")
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def _abandon(self, request: _Request) -> None:
        with self._cond:
            request.abandoned = True
            if request in self._pending:
                self._pending.remove(request)

    def close(self) -> None:
        """Stop; machines still waiting get an error (their run is over anyway)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=5)

    # --- the coordinator's thread ---------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    batch = self._next_batch()
                    if batch or self._due():
                        break
                    self._cond.wait(self._sleep_time())
                else:
                    self._fail_all(OctopusError("the run ended before the health check did"))
                    return
            try:
                if batch:
                    self._start(batch)
                for watch in [w for w in self._watches if w.next_poll <= time.monotonic()]:
                    self._poll(watch)
            except Exception as exc:  # a bug: every machine waiting hears of it, none hangs
                with self._cond:
                    self._fail_all(exc)

    def _fail_all(self, error: Exception) -> None:
        """Every machine waiting gets `error` (the lock is held)."""
        for request in [*self._pending, *(r for w in self._watches for r in w.requests)]:
            request.finish(error=error)
        self._pending.clear()
        self._watches.clear()

    def _next_batch(self) -> list[_Request] | None:
        """The pending machines of one environment (or the pending workers), once gathered
        and a task slot is free."""
        if self._per_machine and self._pending:
            return [self._pending.pop(0)]
        if not self._pending or len(self._watches) >= self._max_tasks:
            return None
        if time.monotonic() < self._first_pending_at + self._gather:
            return None
        kind = self._pending[0].environment_id, self._pending[0].collection
        batch = [r for r in self._pending if (r.environment_id, r.collection) == kind]
        self._pending = [r for r in self._pending if (r.environment_id, r.collection) != kind]
        self._first_pending_at = time.monotonic()
        return batch

    def _due(self) -> bool:
        return any(w.next_poll <= time.monotonic() for w in self._watches)

    def _sleep_time(self) -> float | None:
        wakes = [w.next_poll for w in self._watches]
        if self._pending and (self._per_machine or len(self._watches) < self._max_tasks):
            wakes.append(self._first_pending_at + self._gather)
        return max(0.0, min(wakes) - time.monotonic()) if wakes else None

    def _start(self, batch: list[_Request]) -> None:
        ids = [r.machine_id for r in batch]
        # Each machine's check may take a third of the time its machine has left (within
        # bounds), so that a restart of a hung service and a second check still fit.
        left = min(r.deadline for r in batch) - time.monotonic()
        machine_timeout = int(max(MACHINE_TIMEOUT_MIN, min(MACHINE_TIMEOUT_MAX, left / 3)))
        try:
            with api_budget(max(r.deadline for r in batch), urgent=True):
                task = self._octopus.start_health_task(
                    ids, batch[0].environment_id, machine_timeout=machine_timeout
                )
        except OctopusError as exc:
            for request in batch:
                request.finish(error=exc)
            return
        for request in batch:
            request.task_id, request.state = task["Id"], task["State"]
            request.note(f"health: {task['Id']} checks {len(batch)} machine(s)")
        first = self._first_poll
        now = time.monotonic()
        self._watches.append(_Watch(task, batch, now + first, first, posted=now))

    def _poll(self, watch: _Watch) -> None:
        live = [r for r in watch.requests if not r.abandoned]
        try:
            with api_budget(watch.deadline, urgent=True):
                if not live:  # every machine gave up: nobody waits for this task
                    self._watches.remove(watch)
                    return
                watch.task = task = self._octopus.task(watch.task["Id"])
                for request in live:
                    request.state = task["State"]
                if task["State"] in TASK_DONE:
                    self._watches.remove(watch)
                    self._task_seconds = task_seconds(task) or self._task_seconds
                    self._deliver(task, live)
                    return
                if task["State"] == "Queued":
                    self._tell_queue(watch, live)
        except OctopusError as exc:
            if watch in self._watches:
                self._watches.remove(watch)
            for request in live:
                request.finish(error=exc)
            return
        now, expected = time.monotonic(), self._expected_end(watch)
        if expected is not None and expected > now + watch.delay:
            # Running, and a task of ours took so long before: nothing to learn until then,
            # and every second it is found done late, machines wait for nothing.
            watch.next_poll, watch.delay = expected, self._first_poll
            return
        watch.next_poll = now + watch.delay
        watch.delay = min(watch.delay * 1.5, POLL_MAX_SECONDS)

    def _expected_end(self, watch: _Watch) -> float | None:
        """When the watched task should end (time.monotonic()), if it runs and an earlier
        one of ours has ended: its start as the server counts from its queueing (so no
        clock between us matters), plus the last task's run time."""
        queued = seconds_between(watch.task.get("QueueTime"), watch.task.get("StartTime"))
        if queued is None or self._task_seconds is None:
            return None
        return watch.posted + queued + self._task_seconds

    def _tell_queue(self, watch: _Watch, live: list[_Request]) -> None:
        ahead = tasks_ahead(watch.task, self._octopus.unfinished_tasks())
        if ahead == watch.queued_behind:
            return
        watch.queued_behind = ahead
        line = f"health: queued behind {ahead} task{'s' if ahead != 1 else ''}"
        for request in live:
            request.note(f"{line} ({watch.task['Id']})")
        if self._announce:
            self._announce(f"{line} ({watch.task['Id']}, {len(live)} machine(s))")

    def _deliver(self, task: Resource, live: list[_Request]) -> None:
        records = self._octopus.machines_by_id(
            [r.machine_id for r in live],
            live[0].collection,  # _poll delivers to the live only
        )
        details = None if task["State"] == "Success" else self._octopus.task_details(task["Id"])
        for request in live:
            record = records.get(request.machine_id, {})
            status = health_status(record)
            error = task.get("ErrorMessage") or ""
            if details is None:
                result = HealthResult(task["Id"], task["State"], status, status == HEALTHY)
                request.finish(result)
                continue
            outcome, messages = machine_outcome(details, request.name)
            healthy = outcome == "Success" and status == HEALTHY
            reason = "" if healthy else (
                messages or record.get("StatusSummary") or task.get("ErrorMessage") or ""
            )  # fmt: skip
            # Its check ended (ActivityStatus): not Pending, Running or Canceled with the task.
            checked = outcome in ("Success", "SuccessWithWarning", "Failed")
            result = HealthResult(
                task["Id"], task["State"], status, healthy, reason, error, checked
            )
            request.finish(result)


def seconds_between(start: str | None, end: str | None) -> float | None:
    """Seconds from one of a task's times to another (ISO 8601, as Octopus writes them);
    None if either is not set (a task not started yet) or unreadable."""
    if not start or not end:
        return None
    try:
        return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()
    except ValueError:
        return None


def task_seconds(task: Resource) -> float | None:
    """How long a finished task ran, by the server's clock."""
    return seconds_between(task.get("StartTime"), task.get("CompletedTime"))


def tasks_ahead(task: Resource, unfinished: Sequence[Resource]) -> int:
    """How many of the server's unfinished tasks run or were queued before `task`."""
    return sum(
        1
        for other in unfinished
        if other["Id"] != task["Id"]
        and (other["State"] != "Queued" or (other["QueueTime"] or "") < (task["QueueTime"] or ""))
    )


def machine_outcome(details: Resource, name: str) -> tuple[str, str]:
    """(Status, its warning and error messages) of the activity named after this machine in a
    task's details; ("Pending", "") if the log does not show it (it never got checked)."""
    pattern = re.compile(rf"(?<![\w.-]){re.escape(name)}(?![\w.-])", re.IGNORECASE)
    stack = list(details.get("ActivityLogs") or [])
    while stack:
        element = stack.pop()
        if pattern.search(element.get("Name") or ""):
            messages = [
                log["MessageText"]
                for log in element.get("LogElements") or []
                if log.get("Category") in ("Warning", "Error", "Fatal") and log.get("MessageText")
            ]
            return element.get("Status") or "Pending", " | ".join(messages)
        stack.extend(element.get("Children") or [])
    return "Pending", ""
