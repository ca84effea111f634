"""FleetGroup: bounded parallelism and per-member deadlines, on unopened Connections (the
jobs here are plain functions: nothing connects)."""

import threading
import time

from fabric import Connection, GroupResult

from octoboot.fleet import DeadlineExceeded, FleetGroup


def group(n, **options):
    return FleetGroup.from_connections([Connection(f"host{i}") for i in range(n)], **options)


def test_every_member_runs_and_results_map_connection_to_value():
    fleet = group(5, workers=2)
    results = fleet.call(lambda cxn: cxn.host.upper())
    assert isinstance(results, GroupResult)
    assert {c.host: v for c, v in results.items()} == {f"host{i}": f"HOST{i}" for i in range(5)}


def test_no_more_than_workers_members_at_once():
    running, peak, lock = 0, 0, threading.Lock()
    release = threading.Event()

    def job(cxn):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        release.wait(0.05)
        with lock:
            running -= 1

    group(12, workers=3).call(job)
    assert peak == 3


def test_an_exception_stays_with_its_member():
    def job(cxn):
        if cxn.host == "host1":
            raise ValueError("boom")
        return "ok"

    results = group(3, workers=3).call(job)
    assert isinstance(results[next(c for c in results if c.host == "host1")], ValueError)
    assert len(results.succeeded) == 2 and len(results.failed) == 1


def test_a_member_past_its_deadline_is_cut_loose_and_the_others_finish():
    stuck = threading.Event()
    seen = []

    def job(cxn):
        if cxn.host == "host0":
            stuck.wait(30)  # hangs until the test ends
        return "done"

    started = time.monotonic()
    results = group(4, workers=4, deadline=0.5).call(
        job, on_result=lambda cxn, value: seen.append(cxn.host)
    )
    elapsed = time.monotonic() - started
    stuck.set()
    by_host = {c.host: v for c, v in results.items()}
    assert isinstance(by_host["host0"], DeadlineExceeded)
    assert all(by_host[f"host{i}"] == "done" for i in (1, 2, 3))
    assert seen[-1] == "host0" and len(seen) == 4
    assert elapsed < 10  # not the 30 s the job would have taken


def test_deadline_counts_from_when_a_member_starts_not_from_the_run():
    # one worker: the third member starts ~0.6 s in, yet its 0.5 s deadline is its own
    def job(cxn):
        time.sleep(0.3)
        return "done"

    results = group(3, workers=1, deadline=0.5).call(job)
    assert all(v == "done" for v in results.values())


def test_the_pool_is_sized_to_the_open_files_limit():
    import resource

    from octoboot.fleet import FDS_PER_MACHINE, FDS_SPARE, workers_for_open_files

    assert workers_for_open_files(32, soft_limit=1024, open_now=10) == 32
    room = 200 - 12 - FDS_SPARE
    assert workers_for_open_files(100, soft_limit=200, open_now=12) == room // FDS_PER_MACHINE
    assert workers_for_open_files(8, soft_limit=12 + FDS_SPARE + FDS_PER_MACHINE, open_now=12) == 1
    assert workers_for_open_files(8, soft_limit=20, open_now=18) == 0
    assert workers_for_open_files(8, soft_limit=resource.RLIM_INFINITY, open_now=18) == 8
