"""The health coordinator's grouping, limits and per-machine results (octoboot.health),
against a fake Octopus that answers like the task API: pure logic, no HTTP."""

import datetime as dt
import threading
import time

import pytest

from octoboot.health import HealthCoordinator, machine_outcome, tasks_ahead

ENV = "Environments-1"
# The first poll of a task, sooner than octoboot's (polls grow from there as octoboot's do):
# the fake's tasks last tenths of a second, not the seconds a real one takes.
FIRST_POLL = 0.05


class FakeOctopus:
    """Tasks that run `seconds` after they start; `unhealthy` machines fail in them."""

    def __init__(self, *, seconds=0.1, unhealthy=(), queued_for=0.0, others=0):
        self.seconds, self.unhealthy, self.queued_for = seconds, set(unhealthy), queued_for
        self.others = [  # the server's other unfinished tasks, queued before ours
            {"Id": f"ServerTasks-9{n}", "State": "Executing", "QueueTime": "2026-01-01T00:00"}
            for n in range(others)
        ]
        self.tasks, self.lock, self.peak_in_flight = {}, threading.Lock(), 0

    def start_health_task(self, machine_ids, environment_id, *, machine_timeout=60):
        with self.lock:
            task_id = f"ServerTasks-{len(self.tasks) + 1}"
            self.tasks[task_id] = {"ids": list(machine_ids), "at": time.monotonic()}
            in_flight = sum(1 for t in self.tasks if self._state(t) not in ("Success", "Failed"))
            self.peak_in_flight = max(self.peak_in_flight, in_flight)
            return self.task(task_id)

    def _state(self, task_id):
        if self.seconds is None:
            return "Executing"
        age = time.monotonic() - self.tasks[task_id]["at"]
        if age < self.queued_for:
            return "Queued"
        if age < self.queued_for + self.seconds:
            return "Executing"
        return "Failed" if self.unhealthy & set(self.tasks[task_id]["ids"]) else "Success"

    def task(self, task_id):
        return {"Id": task_id, "State": self._state(task_id), "QueueTime": "2026-01-02T00:00",
                "ErrorMessage": ""}  # fmt: skip

    def unfinished_tasks(self):
        return [*self.others, *(self.task(t) for t in self.tasks)]

    def machines_by_id(self, machine_ids, collection="machines"):
        return {m: {"Id": m, "HealthStatus": "Unavailable" if m in self.unhealthy else "Healthy",
                    "StatusSummary": "stale summary"} for m in machine_ids}  # fmt: skip

    def task_details(self, task_id):
        children = [
            {"Name": name(m), "Status": "Failed" if m in self.unhealthy else "Success",
             "Children": [],
             "LogElements": [{"Category": "Error" if m in self.unhealthy else "Info",
                              "MessageText": f"{name(m)}: does not trust the server"}]}
            for m in self.tasks[task_id]["ids"]
        ]  # fmt: skip
        return {"ActivityLogs": [{"Name": "octoboot: check", "Children": children}]}


def name(machine_id):
    return "web" + machine_id.split("-")[1]


def coordinator_for(octopus, **options):
    return HealthCoordinator(octopus, first_poll_seconds=FIRST_POLL, **options)


def check_all(coordinator, machine_ids, *, deadline_in=10, notes=None, stagger=0.0):
    """Each machine asks from its own thread, as pipelines do; returns id -> result/error.
    deadline_in: seconds for every machine, or a dict of them per machine."""
    results, threads = {}, []

    def one(machine_id):
        seconds = deadline_in[machine_id] if isinstance(deadline_in, dict) else deadline_in
        try:
            results[machine_id] = coordinator.check(
                machine_id, name(machine_id), ENV,
                deadline=time.monotonic() + seconds, cancelled=threading.Event(),
                note=notes.setdefault(machine_id, []).append if notes is not None
                else lambda text: None,
            )  # fmt: skip
        except Exception as exc:
            results[machine_id] = exc

    for machine_id in machine_ids:
        threads.append(threading.Thread(target=one, args=(machine_id,)))
        threads[-1].start()
        time.sleep(stagger)
    for thread in threads:
        thread.join(20)
    return results


def ids(n, first=1):
    return [f"Machines-{i}" for i in range(first, first + n)]


def test_machines_asking_together_share_one_task_and_get_their_own_results():
    octopus = FakeOctopus(unhealthy={"Machines-4"})
    coordinator = coordinator_for(octopus)  # octoboot's own gathering window
    try:
        # one after the other, well within the window even on a busy machine
        results = check_all(coordinator, ids(6), stagger=0.02)
    finally:
        coordinator.close()
    assert [t["ids"] for t in octopus.tasks.values()] == [ids(6)]
    assert {r.task_id for r in results.values()} == {"ServerTasks-1"}
    bad = results.pop("Machines-4")
    assert (bad.healthy, bad.health_status, bad.task_state) == (False, "Unavailable", "Failed")
    assert bad.reason == "web4: does not trust the server"  # its own line of the log
    for result in results.values():
        assert (result.healthy, result.health_status, result.reason) == (True, "Healthy", "")
        # the task failed (for Machines-4), but it did check this one: not a failed task
        assert not result.task_failed_itself
    assert not bad.task_failed_itself


class UncheckedOctopus(FakeOctopus):
    """Records that Octopus has never checked: HealthStatus null."""

    def machines_by_id(self, machine_ids, collection="machines"):
        return {m: {**record, "HealthStatus": None}
                for m, record in super().machines_by_id(machine_ids).items()}  # fmt: skip


def test_a_null_health_status_reads_as_unknown():
    coordinator = coordinator_for(UncheckedOctopus(unhealthy={"Machines-2"}), gather_seconds=0.1)
    try:
        results = check_all(coordinator, ids(2))
    finally:
        coordinator.close()
    assert {r.health_status for r in results.values()} == {"Unknown"}
    assert not any(r.healthy for r in results.values())


class RestartedOctopus(FakeOctopus):
    """A server restarted under its task: Failed with an error, no machine checked."""

    def task(self, task_id):
        return {**super().task(task_id), "State": "Failed", "ErrorMessage": "server restarted"}

    def task_details(self, task_id):
        return {"ActivityLogs": []}


def test_a_task_that_failed_on_its_own_is_told_from_an_unhealthy_machine():
    octopus = RestartedOctopus()
    coordinator = coordinator_for(octopus, gather_seconds=0.1)
    try:
        results = check_all(coordinator, ids(2))
    finally:
        coordinator.close()
    for result in results.values():
        assert result.task_failed_itself and result.error == "server restarted"
        assert not result.healthy  # its stale Healthy status is not this check's answer


def test_at_most_max_tasks_in_flight_and_latecomers_wait_together():
    octopus = FakeOctopus(seconds=0.2)
    coordinator = coordinator_for(octopus, gather_seconds=0.02, max_tasks=2)
    try:
        # 12 machines arriving one every 0.02 s: two tasks start, the rest wait for a slot
        results = check_all(coordinator, ids(12), stagger=0.02)
    finally:
        coordinator.close()
    assert all(r.healthy for r in results.values()), results
    assert octopus.peak_in_flight <= 2
    assert 3 <= len(octopus.tasks) <= 6  # not one per machine
    assert sorted(m for t in octopus.tasks.values() for m in t["ids"]) == sorted(ids(12))


def test_per_machine_gives_each_machine_its_own_task_at_once():
    # OCTOBOOT_HEALTH_TASKS=per-machine, octoboot's way before shared tasks: no gathering and
    # no cap of its own (Octopus' task cap queues them).
    octopus = FakeOctopus(unhealthy={"Machines-2"})
    coordinator = coordinator_for(octopus, gather_seconds=5, max_tasks=2, per_machine=True)
    try:
        results = check_all(coordinator, ids(6))
    finally:
        coordinator.close()
    assert sorted(tuple(t["ids"]) for t in octopus.tasks.values()) == [(m,) for m in ids(6)]
    assert octopus.peak_in_flight > 2
    assert not results.pop("Machines-2").healthy
    assert all(r.healthy for r in results.values()), results


def test_each_machine_keeps_its_own_deadline():
    octopus = FakeOctopus(seconds=None)  # the task never ends
    coordinator = coordinator_for(octopus, gather_seconds=0.05)
    try:
        started = time.monotonic()
        results = check_all(coordinator, ids(2), deadline_in=0.3)
    finally:
        coordinator.close()
    assert time.monotonic() - started < 3
    for result in results.values():
        assert isinstance(result, TimeoutError)
        assert str(result) == "ServerTasks-1 still Executing"


def test_machines_of_one_task_each_keep_their_own_deadline():
    octopus = FakeOctopus(seconds=1.0)
    coordinator = coordinator_for(octopus, gather_seconds=0.05)
    try:
        results = check_all(coordinator, ids(2), deadline_in={"Machines-1": 0.3, "Machines-2": 10})
    finally:
        coordinator.close()
    assert [t["ids"] for t in octopus.tasks.values()] == [ids(2)]  # one task for both
    assert isinstance(results["Machines-1"], TimeoutError)
    assert str(results["Machines-1"]) == "ServerTasks-1 still Executing"
    assert results["Machines-2"].healthy


def test_a_machine_whose_deadline_comes_before_any_task_starts_says_so():
    octopus = FakeOctopus(seconds=None)  # octoboot's one task never ends
    coordinator = coordinator_for(octopus, gather_seconds=0.05, max_tasks=1)
    try:  # Machines-2 asks once Machines-1's task is out, and gives up first
        results = check_all(
            coordinator, ids(2), deadline_in={"Machines-1": 1.5, "Machines-2": 0.3}, stagger=0.2
        )
    finally:
        coordinator.close()
    assert str(results["Machines-1"]) == "ServerTasks-1 still Executing"
    assert isinstance(results["Machines-2"], TimeoutError)
    assert str(results["Machines-2"]) == "no health task had started for it yet"
    assert [t["ids"] for t in octopus.tasks.values()] == [["Machines-1"]]


def test_a_queued_task_says_how_many_tasks_are_ahead():
    octopus = FakeOctopus(queued_for=0.1, seconds=0.05, others=3)
    coordinator, notes = coordinator_for(octopus, gather_seconds=0.05), {}
    try:
        results = check_all(coordinator, ids(2), notes=notes)
    finally:
        coordinator.close()
    assert all(r.healthy for r in results.values())
    assert set(notes) == set(ids(2))
    for machine_notes in notes.values():
        assert "health: queued behind 3 tasks (ServerTasks-1)" in machine_notes


def test_a_refused_task_fails_its_machines_with_octopus_message():
    from octoboot.octopus import OctopusValidationError

    class Refusing(FakeOctopus):
        def start_health_task(self, machine_ids, environment_id, *, machine_timeout=60):
            raise OctopusValidationError("The resource 'Machines-1' was not found.")

    coordinator = coordinator_for(Refusing(), gather_seconds=0.05)
    try:
        results = check_all(coordinator, ids(2))
    finally:
        coordinator.close()
    assert all(isinstance(r, OctopusValidationError) for r in results.values())


def test_tasks_ahead_counts_running_tasks_and_older_queued_ones():
    mine = {"Id": "ServerTasks-5", "State": "Queued", "QueueTime": "2026-01-01T10:00:05"}
    others = [
        {"Id": "ServerTasks-1", "State": "Executing", "QueueTime": "2026-01-01T10:00:09"},
        {"Id": "ServerTasks-2", "State": "Queued", "QueueTime": "2026-01-01T10:00:01"},
        {"Id": "ServerTasks-7", "State": "Queued", "QueueTime": "2026-01-01T10:00:07"},
        mine,
    ]
    assert tasks_ahead(mine, others) == 2


@pytest.mark.parametrize(
    ("element_name", "found"),
    [("web1", True), ("Check web1 health", True), ("web10", False), ("web1.example", False)],
)
def test_machine_outcome_finds_the_machines_own_activity(element_name, found):
    details = {"ActivityLogs": [{"Name": "task", "Children": [
        {"Name": element_name, "Status": "Failed", "LogElements": [
            {"Category": "Info", "MessageText": "connecting"},
            {"Category": "Error", "MessageText": "refused"}]}]}]}  # fmt: skip
    expected = ("Failed", "refused") if found else ("Pending", "")
    assert machine_outcome(details, "web1") == expected


class TimedOctopus(FakeOctopus):
    """Tasks with the server's QueueTime, StartTime and CompletedTime, and a count of the
    polls each task gets."""

    EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def __init__(self, **options):
        super().__init__(**options)
        self.polls = {}

    def _time(self, task_id, after):
        seconds = self.tasks[task_id]["at"] + after
        return (self.EPOCH + dt.timedelta(seconds=seconds)).isoformat()

    def task(self, task_id):
        self.polls[task_id] = self.polls.get(task_id, 0) + 1
        state = self._state(task_id)
        started = state != "Queued"
        done = state in ("Success", "Failed")
        return {
            **super().task(task_id),
            "QueueTime": self._time(task_id, 0),
            "StartTime": self._time(task_id, self.queued_for) if started else None,
            "CompletedTime": self._time(task_id, self.queued_for + self.seconds) if done else None,
        }


def test_a_task_is_looked_at_again_when_the_last_one_took_as_long():
    # The first task is polled ever less often (it could take any time), so its end is
    # found late; once one has ended, the next is polled when it should be done.
    octopus = TimedOctopus(seconds=1.0)
    coordinator = coordinator_for(octopus, gather_seconds=0.01)
    try:
        first = check_all(coordinator, ids(1))
        second = check_all(coordinator, ids(1, first=2))
    finally:
        coordinator.close()
    assert first["Machines-1"].healthy and second["Machines-2"].healthy
    polls = octopus.polls
    assert polls["ServerTasks-1"] >= 5  # 0.05 s, growing by half each time
    assert polls["ServerTasks-2"] <= 3  # its start, then at its expected end
