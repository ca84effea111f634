import json

from octoboot.report import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, MachineResult, State
from octoboot.status import StatusReport, find_drift, unlisted, unlisted_result
from octoboot.tentacle import Probe

HOST = "A" * 40
OTHER = "B" * 40


def probe(**kw):
    values = dict(installed=True, version="8.1.0", instance_exists=True, thumbprint=HOST,
                  service_enabled=True, service_active=True)  # fmt: skip
    return Probe(**{**values, **kw})


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


def drift(**kw):
    values = dict(environment_id="Environments-1", roles=("web",), probe=probe(),
                  store_thumbprint=HOST, record=record(), health="Healthy")  # fmt: skip
    return [str(d) for d in find_drift(**{**values, **kw})]


def test_a_machine_in_the_wanted_state_has_no_drift():
    assert drift() == []
    # roles compare without case or order, as Octopus does
    assert drift(roles=("API", "web"), record=record(Roles=["web", "api"])) == []


def test_host_side_drift():
    assert drift(probe=Probe(installed=False)) == ["not installed"]
    assert drift(probe=probe(service_active=False)) == ["service not active"]
    assert drift(probe=probe(thumbprint=None, instance_exists=False)) == ["no host certificate"]
    unreadable = "There is an error in XML document (0, 0)."
    damaged = probe(thumbprint=None, instance_exists=False, configuration_error=unreadable)
    assert drift(probe=damaged) == [f"configuration damaged ({unreadable})"]
    assert drift(probe=probe(thumbprint=OTHER)) == [f"host thumbprint (host {OTHER}, store {HOST})"]
    assert drift(probe=probe(problems=("unreadable show-configuration output",))) == [
        "probe (unreadable show-configuration output)"
    ]


def test_an_unreached_host_is_judged_on_the_store_and_octopus_only():
    assert drift(probe=None) == []
    assert drift(probe=None, record=record(Roles=["db"])) == ["roles (Octopus db, inventory web)"]


def test_octopus_side_drift():
    assert drift(record=None) == ["missing from Octopus"]
    assert drift(record=None, thumbprint_registered_as=["old01 (Machines-7)"]) == [
        "missing from Octopus (its thumbprint is registered as old01 (Machines-7))"
    ]
    assert drift(record=record(Endpoint={"Thumbprint": OTHER.lower()})) == [
        f"Octopus thumbprint (Octopus {OTHER}, expected {HOST})"
    ]
    assert drift(record=record(EnvironmentIds=["Environments-1", "Environments-2"])) == [
        "environment (Octopus Environments-1 Environments-2, inventory Environments-1)"
    ]
    assert drift(record=record(Roles=[])) == ["roles (Octopus none, inventory web)"]
    assert drift(health="Unavailable") == ["health (Unavailable)"]
    assert drift(health=None) == ["health (Unknown)"]


def test_without_a_stored_identity_octopus_is_compared_with_the_host():
    assert drift(store_thumbprint=None) == ["no stored identity"]
    assert drift(store_thumbprint=None, record=record(Endpoint={"Thumbprint": OTHER})) == [
        "no stored identity",
        f"Octopus thumbprint (Octopus {OTHER}, expected {HOST})",
    ]


def test_unlisted_keeps_the_environments_machines_no_inventory_names():
    records = [
        record(Name="web02", Id="Machines-2"),
        record(Name="Web01"),
        record(Name="rogue", Id="Machines-3"),
        record(Name="db01", Id="Machines-4", EnvironmentIds=["Environments-2"]),
    ]
    found = unlisted(records, "Environments-1", ["web01"])
    assert [r["Name"] for r in found] == ["rogue", "web02"]
    assert [r["Name"] for r in unlisted(records, "Environments-1", ["web01"], ["web*"])] == [
        "web02"
    ]


def test_status_table_and_exit_code():
    ok = MachineResult(
        1,
        "web01",
        "QA",
        state=State.OK,
        facts={"reachable": "yes", "version": "8.1.0", "service": "active",
               "host_thumbprint": HOST, "store_thumbprint": HOST, "octopus_id": "Machines-1",
               "octopus_thumbprint": HOST, "health": "Healthy", "drift": ""},
    )  # fmt: skip
    down = MachineResult(
        2,
        "web02",
        "QA",
        state=State.UNREACHABLE,
        failed_step="connect",
        reason="cannot reach 10.0.0.2:22: refused",
        facts={"reachable": "no", "octopus_id": "Machines-2", "health": "Unavailable"},
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
    assert data["machines"][2]["facts"]["octopus_id"] == "Machines-9"
