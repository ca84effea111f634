import json

from octoboot.report import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, MachineResult, State
from octoboot.status.table import StatusReport
from octoboot.status.unlisted import unlisted_result

HOST = "A" * 40


def record(**kw):
    values = {
        "Id": "Machines-1",
        "Name": "web01",
        "EnvironmentIds": ["Environments-1"],
        "Roles": ["web"],
        "Endpoint": {"Thumbprint": HOST},
        "HealthStatus": "Healthy",
    }
    return {**values, **kw}


def test_status_table_and_exit_code():
    ok = MachineResult(
        1,
        "web01",
        "QA",
        state=State.OK,
        octopus_id="Machines-1",
        facts={"reachable": "yes", "version": "8.1.0", "service": "active",
               "host_thumbprint": HOST, "store_thumbprint": HOST,
               "octopus_thumbprint": HOST, "health": "Healthy", "drift": ""},
    )  # fmt: skip
    down = MachineResult(
        2,
        "web02",
        "QA",
        state=State.UNREACHABLE,
        failed_step="connect",
        octopus_id="Machines-2",
        reason="cannot reach 10.0.0.2:22: refused",
        facts={"reachable": "no", "health": "Unavailable"},
    )
    assert StatusReport("status", [ok], 1.0).exit_code == EXIT_OK
    extra = unlisted_result(3, record(Name="rogue", Id="Machines-9"), "QA")
    report = StatusReport("status", [ok, down, extra], 2.0, run_dir="/x/runs/1")
    assert extra.state == State.UNKNOWN
    assert report.exit_code == EXIT_FAILED | EXIT_UNREACHABLE
    lines = report.table().splitlines()
    assert lines[0].split()[:4] == ["machine", "environment", "state", "reachable"]
    assert lines[2].split() == ["web01", "QA", "ok", "yes", "8.1.0", "active", "AAAAAAAA…",
                                "AAAAAAAA…", "Machines-1", "AAAAAAAA…", "Healthy"]  # fmt: skip
    assert "cannot reach 10.0.0.2:22" in lines[3] and "Unavailable" in lines[3]
    assert "rogue" in lines[4] and "unknown" in lines[4] and "not in the inventory" in lines[4]
    assert "3 machine(s): 1 ok, 1 unknown, 1 unreachable" in lines[-2]
    assert lines[-1] == "logs: /x/runs/1"
    data = json.loads(report.to_json())
    # The Octopus Id is the row's own field, in JSON as in the table: once, not also a fact.
    assert data["machines"][2]["octopus_id"] == "Machines-9"
    assert "octopus_id" not in data["machines"][2]["facts"]
    assert "Machines-2" in lines[3]


def test_status_has_its_own_short_deadline_and_deadline_changes_it(tmp_path):
    from octoboot.run import RunOptions, Selection
    from octoboot.settings import load_settings
    from octoboot.status import StatusRun
    from octoboot.status.steps import Status, StatusOptions

    machines = tmp_path / "machines"
    machines.mkdir()
    (machines / "qa.toml").write_text(
        'environment = "QA"\nroles = ["web"]\n\n[ssh]\ndeadline = 900\n\n'
        '[[machines]]\nname = "web01"\n\n[[machines]]\nname = "web02"\ndeadline = 5\n'
    )
    settings = load_settings({"OCTOBOOT_MACHINES_DIR": str(machines)}, None)

    def deadlines(**options):
        run = StatusRun(Selection(env="qa"), RunOptions(**options), settings, StatusOptions())
        return [run.deadline(m) for m in run.machines]

    assert Status.DEADLINE is not None and Status.DEADLINE <= 60
    # status only reads: a hung host gets its own short bound, not the inventory's 900 s,
    # and an inventory that gives a machine less still wins
    assert deadlines() == [Status.DEADLINE, 5]
    assert deadlines(deadline=120.0) == [120.0, 120.0]
