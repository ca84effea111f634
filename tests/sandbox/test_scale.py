"""octoboot under a real server's limits, on the sandbox (real SSH, real HTTP): shared
Health tasks, a task queued behind the task cap, a rate-limited API, rolling runs."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from octoboot.bootstrap import bootstrap
from octoboot.report import EXIT_FAILED, EXIT_OK, EXIT_STOPPED, State
from octoboot.run import RunOptions, Selection
from tests.sandbox.project import FAST, by_name, inv, octopus_machines, quiet

TWENTY = [f"sbx{i:02d}" for i in range(1, 21)]
UNTRUSTING = "sbx07"


@pytest.fixture(scope="module")
def sandbox(sandbox_factory):
    # Health tasks of a second: long enough to share and to queue behind, short for a test.
    return sandbox_factory(24, install_seconds=1, settings=replace(FAST, health_seconds=1.0))


def requests_since(sandbox, offset: int) -> list[dict]:
    lines = (sandbox.root / "octopus" / "requests.jsonl").read_text().splitlines()[offset:]
    return [json.loads(line) for line in lines]


def request_offset(sandbox) -> int:
    log = sandbox.root / "octopus" / "requests.jsonl"
    return len(log.read_text().splitlines()) if log.exists() else 0


def health_task_of(row) -> str:
    """The Health task a machine's health step names (in its detail or its reason)."""
    step = next(s for s in row.steps if s.name == "health")
    return next(word.strip("()") for word in step.detail.split() if "ServerTasks-" in word)


@pytest.fixture(scope="module")
def twenty(sandbox, settings):
    """One parallel bootstrap of 20 fresh machines, one of which trusts no server."""
    sandbox.set_faults(UNTRUSTING, untrusting=True)
    offset = request_offset(sandbox)
    lines: list[str] = []
    # A wider gathering window than the default half second: on a loaded machine the twenty
    # reach their health step further apart, and the unhealthy one must share a task.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("octoboot.health.GATHER_SECONDS", 3.0)
        report = bootstrap(
            Selection(env="sandbox", hosts=tuple(TWENTY)),
            RunOptions(parallel=True, console=lines.append),
            settings,
        )
    return report, requests_since(sandbox, offset), lines


def test_twenty_machines_share_few_health_tasks(twenty):
    report, requests, _ = twenty
    started = [r for r in requests if r["method"] == "POST" and r["path"].endswith("/tasks")]
    assert 1 <= len(started) <= 6, started
    tasks = Counter(health_task_of(row) for row in report.results)
    assert sum(tasks.values()) == 20 and len(tasks) == len(started)
    assert max(tasks.values()) >= 5, tasks  # machines arriving together went together


def test_each_machine_gets_its_own_health_inside_a_shared_task(twenty, octopus):
    report, _, _ = twenty
    assert report.exit_code == EXIT_FAILED, report.table()
    rows, registered = by_name(report), octopus_machines(octopus)
    bad = rows.pop(UNTRUSTING)
    assert (bad.state, bad.failed_step) == (State.FAILED, "health")
    assert "Unavailable" in bad.reason and "trust" in bad.reason, bad.reason
    assert registered[UNTRUSTING]["HealthStatus"] == "Unavailable"
    shared = health_task_of(bad)
    # its reason is its own line of the task's log, not the task's list of every failure
    assert "sbx" not in bad.reason.split(":", 1)[1]
    assert any(health_task_of(row) == shared for row in rows.values()), "not shared"
    for name, row in rows.items():
        assert row.state == State.CHANGED, row
        assert registered[name]["HealthStatus"] == "Healthy"


def test_reads_every_machine_needs_happen_once_per_run(twenty):
    _, requests, _ = twenty
    gets = Counter(r["path"].split("?")[0] for r in requests if r["method"] == "GET")
    for path in (
        "/api/spaces/all",
        "/api/configuration/certificates/certificate-global",
        "/api/Spaces-1/environments",
        "/api/Spaces-1/machinepolicies/all",
        "/api/Spaces-1/machines/all",
    ):
        assert gets[path] == 1, (path, gets)
    assert gets["/api"] == 0  # the spaces answered as Octopus does: no need to ask what it is
    posts = Counter(r["path"] for r in requests if r["method"] == "POST")
    assert posts["/api/Spaces-1/machines"] == 20


def test_a_health_task_queued_behind_the_task_cap_is_waited_for_and_reported(
    sandbox, settings, twenty
):
    # One slot, taken by someone else's long Health task when octoboot's arrives (long
    # enough to still run when a loaded machine gets the two machines to their health step).
    sandbox.change_settings(task_cap=1, health_seconds=12.0)
    client = httpx.Client(
        base_url=sandbox.endpoints().octopus_url,
        headers={"X-Octopus-ApiKey": sandbox.api_key()},
        timeout=10,
    )
    try:
        machine_id = octopus_machines(client)["sbx01"]["Id"]
        other = client.post(
            "/api/Spaces-1/tasks",
            json={"Name": "Health", "Arguments": {"MachineIds": [machine_id]}},
        ).json()
        lines: list[str] = []
        report = bootstrap(
            Selection(hosts=("sbx01", "sbx02")),
            RunOptions(parallel=True, console=lines.append),
            settings,
        )
        assert report.exit_code == EXIT_OK, report.table()
        ours = client.get(f"/api/tasks/{health_task_of(report.results[0])}").json()
        other = client.get(f"/api/tasks/{other['Id']}").json()
    finally:
        client.close()
        sandbox.change_settings(task_cap=FAST.task_cap, health_seconds=1.0)
    queued = dt.datetime.fromisoformat(ours["QueueTime"])
    started = dt.datetime.fromisoformat(ours["StartTime"])
    assert started >= dt.datetime.fromisoformat(other["CompletedTime"])
    assert (started - queued).total_seconds() >= 1.0
    # the live output said why nothing moved (one line for the task in a quiet run) ...
    announced = [line for line in lines if line.startswith("health: queued behind 1 task ")]
    assert announced and ours["Id"] in announced[0], lines
    # ... and so does each machine's log
    for row in report.results:
        assert f"health: queued behind 1 task ({ours['Id']})" in Path(row.log).read_text()


def test_a_rate_limited_api_is_waited_out_and_the_run_succeeds(sandbox, settings, twenty):
    # One request a second and no burst to save up: four new machines registering at about
    # the same time, and their health task polled meanwhile, must wait for their turns.
    sandbox.change_settings(rate_limit=60, rate_burst=1)
    offset = request_offset(sandbox)
    try:
        report = bootstrap(Selection(hosts=("sbx21", "sbx22", "sbx23", "sbx24")), quiet(), settings)
    finally:
        sandbox.change_settings(rate_limit=0)
    assert report.exit_code == EXIT_OK, report.table()
    assert {row.state for row in report.results} == {State.CHANGED}
    limited = [r for r in requests_since(sandbox, offset) if r["status"] == 429]
    assert limited, "the stand-in never said 429"
    waited = [row for row in report.results if row.api_wait_seconds > 0]
    assert waited, report.to_json()
    assert "API wait" in report.table()


def tentacle_call_times(sandbox, name: str, since: dt.datetime) -> list[dt.datetime]:
    log = sandbox.host(name).control / "argv.jsonl"
    times = [
        dt.datetime.fromisoformat(json.loads(line)["time"]) for line in log.read_text().splitlines()
    ]
    return [t for t in times if t >= since]


def test_batches_run_one_after_another_and_max_fail_skips_the_rest(sandbox, settings, twenty):
    sandbox.set_faults("sbx03", refuse_login=True)
    since = dt.datetime.now(dt.UTC)
    try:
        proc = inv(
            settings, "bootstrap", "--env", "sandbox", "--limit", "sbx0[1-6]", "--parallel",
            "--batch", "2", "--max-fail", "0", "--format", "json",
        )  # fmt: skip
    finally:
        sandbox.set_faults("sbx03", refuse_login=False)
    assert proc.returncode == EXIT_FAILED | EXIT_STOPPED, proc.stderr
    rows = {m["machine"]: m for m in json.loads(proc.stdout)["machines"]}
    states = {name: rows[name]["state"] for name in sorted(rows)}
    assert states == {
        "sbx01": "unchanged", "sbx02": "unchanged",  # batch 1
        "sbx03": "failed", "sbx04": "unchanged",  # batch 2: one failure is more than 0
        "sbx05": "skipped", "sbx06": "skipped",  # batch 3 never starts
    }  # fmt: skip
    assert "more than --max-fail 0 allows" in rows["sbx05"]["reason"]
    assert "batch 2 (2 machines)" in rows["sbx05"]["reason"]
    assert tentacle_call_times(sandbox, "sbx05", since) == []
    # batch 2 began when batch 1 had ended
    first_batch_end = max(
        t for n in ("sbx01", "sbx02") for t in tentacle_call_times(sandbox, n, since)
    )
    assert min(tentacle_call_times(sandbox, "sbx04", since)) >= first_batch_end
    assert "batch 1 of 3: 2 machine(s)" in proc.stderr


def test_max_fail_percentage_of_a_whole_run(sandbox, settings, twenty):
    for name in ("sbx01", "sbx02"):
        sandbox.set_faults(name, refuse_login=True)
    try:
        report = bootstrap(
            Selection(env="sandbox", limits=("sbx0[1-6]",)),
            quiet(parallel=False, max_fail="20%"),  # 20% of 6 is 1.2: the second stops it
            settings,
        )
    finally:
        for name in ("sbx01", "sbx02"):
            sandbox.set_faults(name, refuse_login=False)
    states = [row.state for row in report.results]
    assert states == [State.FAILED, State.FAILED] + [State.SKIPPED] * 4
    assert report.exit_code == EXIT_FAILED | EXIT_STOPPED
    assert "more than --max-fail 20% allows" in report.results[2].reason
    assert "skipped" in report.table()
