"""Each step's plan, from data alone (no SSH, no Octopus): what it would change, or why it
has nothing to do. And the one place that applies a plan: a dry run shows what a real run
carries out, action for action."""

import base64
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from octoboot import certificates
from octoboot.bootstrap import (
    NEW_SUBSCRIPTION,
    Bootstrap,
    BootstrapOptions,
    find_record,
    plan_configure,
    plan_hung_service_restart,
    plan_identity,
    plan_install,
    plan_register,
    plan_service,
    service_command,
)
from octoboot.deregister import (
    plan_deregister,
    plan_deregister_record,
    plan_forget,
    plan_uninstall,
)
from octoboot.drift import LISTENING, PollingServer, RegistrationIds, WantedRecord
from octoboot.identity import IdentityStore
from octoboot.inventory import (
    POLLING,
    Machine,
    PollingProxy,
    Registration,
    SshOptions,
    TentacleOptions,
)
from octoboot.octopus import MachineIndex
from octoboot.pipeline import (
    ApiCall,
    Change,
    Command,
    IdentityAction,
    Job,
    Noop,
    StepFailed,
    Upload,
)
from octoboot.prune import Doomed, plan_prune
from octoboot.report import State
from octoboot.tentacle import PollingProxySettings, Probe

HOST = "A" * 40  # the machine's certificate
OTHER = "B" * 40
SERVER = "C" * 40  # the Octopus Server's
URI = "https://web01:10933/"
POLLS = PollingServer("octopus.example.com", 10943)
REGISTRATION = RegistrationIds(machine_policy_id="MachinePolicies-1")
URL = "https://example.com/tentacle-{version}.tar.gz"


def machine(name="web01", **kw) -> Machine:
    values = dict(name=name, env_key="qa", environment="QA", roles=("web",), address=name,
                  public_hostname=None, ssh=SshOptions(), tentacle=TentacleOptions(),
                  octopus=None, source_file=Path("machines/qa.toml"))  # fmt: skip
    return Machine(**{**values, **kw})


def polling(**kw) -> Machine:
    return machine(communication=POLLING, **kw)


def probe(**kw) -> Probe:
    values = dict(installed=True, version="8.1.0", instance_exists=True, thumbprint=HOST,
                  port=10933, no_listen=False, app_dir=TentacleOptions().app_dir,
                  trusted=(SERVER,), service_enabled=True, service_active=True)  # fmt: skip
    return Probe(**{**values, **kw})


def polling_probe(**kw) -> Probe:
    values = dict(port=None, no_listen=True, polling_address=POLLS.address,
                  subscription="poll://abcdefghijklmnopqrst/")  # fmt: skip
    return probe(**{**values, **kw})


def record(name="web01", thumbprint=HOST, id="Machines-1", **kw) -> dict:
    values = {
        "Id": id,
        "Name": name,
        "EnvironmentIds": ["Environments-1"],
        "Roles": ["web"],
        "MachinePolicyId": "MachinePolicies-1",
        "Endpoint": {"CommunicationStyle": LISTENING, "Uri": URI, "Thumbprint": thumbprint},
    }
    return {**values, **kw}


def wanted(**kw) -> WantedRecord:
    values = dict(environment_id="Environments-1", roles=("web",), communication_style=LISTENING,
                  uri=URI, thumbprint=HOST, registration=REGISTRATION)  # fmt: skip
    return WantedRecord(**{**values, **kw})


def commands(plan) -> list[str]:
    return [a.command for a in plan.actions if isinstance(a, Command)]


# --- install --------------------------------------------------------------------------------


def install(p: Probe, **options):
    tentacle = TentacleOptions(**{"version": "8.2.0", "source": URL, **options})
    return plan_install(p, tentacle, source_file="machines/qa.toml", upload_to="/tmp/up.tar.gz")


def test_install_when_absent_downloads_and_says_the_host_will_have_it():
    plan = install(Probe(installed=False))
    assert isinstance(plan, Change)
    assert plan.what == "would install Tentacle 8.2.0"
    (command,) = commands(plan)
    assert "tentacle-8.2.0.tar.gz" in command
    assert plan.probe is not None
    assert (plan.probe.installed, plan.probe.version) == (True, "8.2.0")
    assert not plan.probe.restart_pending  # no instance yet to restart


def test_install_over_an_older_one_restarts_the_instance_it_has():
    plan = install(probe(version="8.1.0"))
    assert isinstance(plan, Change) and plan.what == "would install Tentacle 8.1.0 → 8.2.0"
    assert plan.probe is not None and plan.probe.restart_pending


def test_install_of_the_same_or_an_older_version_is_a_noop():
    assert install(probe(version="8.2.0")) == Noop("unchanged", "Tentacle 8.2.0")
    assert install(probe(version="9.0.0")) == Noop("unchanged", "Tentacle 9.0.0")
    # no version asked for: whatever is installed will do
    assert install(probe(), version=None, source=None) == Noop("unchanged", "Tentacle 8.1.0")


def test_install_without_a_source_fails_saying_where_to_add_one():
    with pytest.raises(StepFailed, match=r"machines/qa.toml has no \[tentacle\] source"):
        install(Probe(installed=False), source=None)


def test_install_from_a_local_archive_uploads_it_first():
    plan = install(Probe(installed=False), source="/srv/tentacle.tar.gz")
    assert isinstance(plan, Change)
    assert plan.actions[0] == Upload("/srv/tentacle.tar.gz", "/tmp/up.tar.gz")
    assert "/tmp/up.tar.gz" in commands(plan)[0]


# --- identity -------------------------------------------------------------------------------


def test_identity_known_and_on_the_host_is_unchanged():
    assert plan_identity(probe(), machine(), HOST) == Noop("unchanged", HOST)


def test_identity_new_is_minted_then_imported_into_a_new_instance():
    plan = plan_identity(probe(instance_exists=False, thumbprint=None), machine(), None)
    assert isinstance(plan, Change)
    assert plan.what == "would import a new identity (minted on the controller)"
    assert plan.actions[0] == IdentityAction("mint", "web01")
    (command,) = plan.actions[1:]
    assert isinstance(command, Command) and command.pfx_of == "web01"
    assert "new-instance" in command.command or "create-instance" in command.command
    assert plan.probe is not None and plan.probe.instance_exists and plan.probe.restart_pending
    assert plan.probe.port is None  # a new instance: configure has everything to do


def test_identity_plan_holds_no_secret_the_pfx_goes_as_stdin_when_applied(tmp_path):
    store = IdentityStore(tmp_path, "store password")
    identity = store.get_or_create("web01")
    pfx = base64.b64encode(identity.unprotected_pfx()).decode()[:200]  # its first bytes
    plan = plan_identity(probe(thumbprint=OTHER), machine(), identity.thumbprint)
    assert isinstance(plan, Change)
    (command,) = plan.actions
    assert isinstance(command, Command) and command.pfx_of == "web01"
    assert pfx not in repr(plan)

    sent = []
    for dry_run in (True, False):
        pipeline, log = recording(dry_run, identities=store)
        pipeline.apply(plan, then=lambda results: "imported")
        assert not any(pfx in line for line in log.lines)
        sent += pipeline.sent
    ((_, stdin),) = sent  # the real run only
    assert stdin is not None
    _, cert = certificates.load_pfx(base64.b64decode(stdin), None)
    assert certificates.thumbprint(cert) == identity.thumbprint


def test_identity_conflict_is_skipped_for_register_to_fail_on():
    plan = plan_identity(probe(thumbprint=None), machine(), HOST, conflict="taken")
    assert plan == Noop("skipped", "not imported: Octopus has a conflicting record (see register)")


def test_identity_refuses_a_host_carrying_another_registered_machines_certificate():
    holders = [record("web02", OTHER, "Machines-2")]
    with pytest.raises(StepFailed, match="--renamed-from web02"):
        plan_identity(probe(thumbprint=OTHER), machine(), HOST, holders=holders)


def test_identity_into_a_damaged_configuration_replaces_it():
    damaged = probe(
        configuration_error="unreadable", thumbprint=None, polling_proxy=PollingProxySettings("p")
    )
    plan = plan_identity(damaged, machine(), HOST)
    assert isinstance(plan, Change)
    assert plan.what == f"would import {HOST} into a new configuration (the old one was damaged)"
    assert plan.probe is not None and plan.probe.polling_proxy == PollingProxySettings()
    assert plan.probe.configuration_error is None


def test_identity_of_a_renamed_machine_is_sent_from_where_the_store_has_it():
    plan = plan_identity(probe(thumbprint=None), machine("web01-new"), HOST, stored_as="web01")
    assert isinstance(plan, Change)
    assert [a.pfx_of for a in plan.actions if isinstance(a, Command)] == ["web01"]


def test_identity_needs_an_installed_tentacle():
    with pytest.raises(StepFailed, match="not installed"):
        plan_identity(Probe(installed=False), machine(), HOST)


def test_the_record_found_by_name_by_old_name_and_the_conflicts():
    mine = record()
    assert find_record("web01", HOST, index=MachineIndex((mine,))) == (mine, None)
    old = record("web00", HOST)
    found = find_record("web01", HOST, index=MachineIndex((old,)), renamed_from="web00")
    assert found == (old, None)
    other = record("web02", HOST, "Machines-2")
    _, duplicate = find_record("web01", HOST, index=MachineIndex((other,)))
    assert "already registered as web02" in str(duplicate)
    taken = record(thumbprint=OTHER)
    assert "--take-over" in str(find_record("web01", HOST, index=MachineIndex((taken,)))[1])
    assert find_record("web01", HOST, index=MachineIndex((taken,)), take_over=True) == (
        taken,
        None,
    )
    worker = record(thumbprint=HOST, id="Workers-1")
    _, elsewhere = find_record("web01", HOST, index=MachineIndex(()), elsewhere=[worker])
    assert "Workers-1" in str(elsewhere)


# --- configure ------------------------------------------------------------------------------


def test_configure_listening_as_wanted_is_unchanged():
    plan = plan_configure(probe(), machine(), SERVER)
    assert isinstance(plan, Noop) and plan.status == "unchanged"


def test_configure_listening_on_another_port_is_reconfigured_and_restarts():
    plan = plan_configure(probe(port=10934), machine(), SERVER)
    assert isinstance(plan, Change)
    assert plan.what == f"would configure: listening on 10933, trusts only {SERVER[:8]}…"
    assert "10933" in commands(plan)[0]
    assert plan.probe is not None and plan.probe.restart_pending


def test_configure_polling_as_wanted_is_unchanged():
    plan = plan_configure(polling_probe(), polling(), SERVER, POLLS)
    assert isinstance(plan, Noop) and plan.status == "unchanged"


def test_configure_polling_with_proxy_drift_sets_only_the_proxy():
    wanted_proxy = Registration(polling_proxy=PollingProxy("proxy.example.com", 3128))
    plan = plan_configure(polling_probe(), polling(registration=wanted_proxy), SERVER, POLLS)
    assert isinstance(plan, Change)
    assert "polling proxy" in plan.what and "with a new subscription" not in plan.what
    (command,) = commands(plan)
    assert "proxy.example.com" in command and "server-comms" not in command
    assert plan.probe is not None and plan.probe.subscription == polling_probe().subscription


def test_configure_polling_anew_plans_a_new_subscription():
    plan = plan_configure(polling_probe(subscription=None), polling(), SERVER, POLLS)
    assert isinstance(plan, Change)
    assert plan.what.endswith("with a new subscription")
    assert "server-comms" in commands(plan)[0]
    # what register plans with: a new id, as a real run reads back from the command
    assert plan.probe is not None and plan.probe.subscription == NEW_SUBSCRIPTION


# --- register -------------------------------------------------------------------------------


def test_register_creates_a_target_or_a_worker():
    plan = plan_register(machine(), wanted(), None)
    assert isinstance(plan, Change) and plan.what == "would create a machine in QA"
    assert plan.actions == (ApiCall("POST", "machines", body=wanted().new("web01")),)
    worker = machine(kind="worker", worker_pools=("Linux workers",))
    plan = plan_register(worker, wanted(environment_id=None), None, collection="workers")
    assert isinstance(plan, Change) and plan.what == "would create a worker in Linux workers"
    assert isinstance(plan.actions[0], ApiCall) and plan.actions[0].collection == "workers"


def test_register_updates_what_differs_the_port_included():
    current = record(Endpoint={"CommunicationStyle": LISTENING, "Uri": "https://web01:10934/",
                               "Thumbprint": HOST}, Roles=["db"])  # fmt: skip
    plan = plan_register(machine(), wanted(), current)
    assert isinstance(plan, Change)
    assert plan.what == "would update Machines-1: roles, address"
    assert plan.done == "updated Machines-1: roles, address"
    (put,) = plan.actions
    assert isinstance(put, ApiCall) and put.method == "PUT" and put.record_id == "Machines-1"
    assert put.body is not None and put.body["Endpoint"]["Uri"] == URI


def test_register_renames_the_record_and_the_identity():
    plan = plan_register(machine("web01-new"), wanted(), record(), stored_as="web01")
    assert isinstance(plan, Change)
    assert plan.what == "would update Machines-1: name web01 → web01-new"
    assert plan.actions[0] == IdentityAction("rename", "web01-new", old="web01")
    put = plan.actions[1]
    assert isinstance(put, ApiCall) and put.body is not None and put.body["Name"] == "web01-new"


def test_register_as_wanted_is_unchanged():
    assert plan_register(machine(), wanted(), record()) == Noop("unchanged", "Machines-1")


def test_register_fails_on_a_conflict_or_a_polling_machine_without_subscription():
    with pytest.raises(StepFailed, match="taken"):
        plan_register(machine(), wanted(), None, conflict="taken")
    with pytest.raises(StepFailed, match="no polling subscription"):
        plan_register(polling(), wanted(uri=""), None, subscription="")


# --- service --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "action", "said"),
    [
        (dict(service_enabled=False, service_active=False), "install", "installed and started"),
        (dict(restart_pending=True), "restart", "restarted"),
        (dict(service_active=False), "start", "started"),
    ],
)
def test_service_is_installed_restarted_or_started(host, action, said):
    plan = plan_service(probe(**host), machine())
    assert isinstance(plan, Change)
    unit = plan.what.split()[2]
    assert plan.what == f"would have {unit} {said}" and plan.done == f"{unit} {said}"
    assert action in commands(plan)[0]


def test_service_active_is_unchanged():
    plan = plan_service(probe(), machine())
    assert isinstance(plan, Noop) and plan.status == "unchanged"


def test_a_hung_service_is_restarted_once_through_a_plan():
    host = machine()
    plan = plan_hung_service_restart(host, "ServerTasks-7")
    assert plan.actions == (Command(service_command(host, "restart")),)
    assert plan.what == "would restart Tentacle.service, active but Unavailable in ServerTasks-7"
    assert plan.done == "after restarting Tentacle.service, active but Unavailable in ServerTasks-7"


# --- deregister, uninstall, forget, prune ---------------------------------------------------


def test_deregister_deletes_only_this_machines_record():
    assert plan_deregister("web01", [], thumbprint=HOST) == Noop(
        "unchanged", "not registered in Octopus"
    )
    plan = plan_deregister("web01", [record()], thumbprint=HOST)
    assert plan == Change(
        "would delete Machines-1",
        (ApiCall("DELETE", "machines", "Machines-1"),),
        done="deleted Machines-1",
    )
    with pytest.raises(StepFailed, match="another machine's record"):
        plan_deregister("web01", [record(thumbprint=OTHER)], thumbprint=HOST)
    with pytest.raises(StepFailed, match="no certificate"):
        plan_deregister("web01", [record()], thumbprint=None)
    with pytest.raises(StepFailed, match="was not removed"):
        plan_deregister("web01", [record()], thumbprint=None, damaged="damaged")
    kept = plan_deregister(
        "web01", [record()], thumbprint=None, damaged="damaged", forget_identity=True
    )
    assert isinstance(kept, Noop) and kept.status == "skipped" and "--take-over" in kept.reason


def test_deregister_of_an_unlisted_record_checks_its_environment_and_certificate():
    plan = plan_deregister_record(
        machine(), [record()], environment_id="Environments-1", stored_thumbprint=None
    )
    assert isinstance(plan, Change) and plan.what == "would delete Machines-1"
    with pytest.raises(StepFailed, match="not in QA"):
        plan_deregister_record(
            machine(), [record()], environment_id="Environments-2", stored_thumbprint=None
        )
    with pytest.raises(StepFailed, match="not the stored identity"):
        plan_deregister_record(
            machine(), [record()], environment_id="Environments-1", stored_thumbprint=OTHER
        )


def test_uninstall_removes_what_is_there():
    plan = plan_uninstall(probe(), "Tentacle")
    assert isinstance(plan, Change)
    assert plan.what == "would remove the service and instance Tentacle"
    gone = plan_uninstall(Probe(installed=True), "Tentacle")
    assert gone == Noop("unchanged", "no Tentacle instance on the host")


def test_forget_deletes_the_identity_only_when_asked_and_there():
    assert isinstance(plan_forget("web01", forget=False, stored=True), Noop)
    assert plan_forget("web01", forget=True, stored=False) == Noop(
        "unchanged", "no identity in the store"
    )
    plan = plan_forget("web01", forget=True, stored=True)
    assert isinstance(plan, Change) and plan.actions == (IdentityAction("forget", "web01"),)


def test_prune_deletes_the_doomed_record_where_octopus_keeps_it():
    plan = plan_prune(Doomed(record(id="Workers-9"), "no inventory lists it", "workers"))
    assert plan.actions == (ApiCall("DELETE", "workers", "Workers-9"),)
    assert (plan.what, plan.done) == ("would delete Workers-9", "deleted Workers-9")


# --- the one place a plan is applied --------------------------------------------------------


class Log:
    path = Path("unused.log")

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, text: str, *, echo: bool = True) -> None:
        self.lines.append(text)


class Recording(Bootstrap):
    """Bootstrap's own steps and apply, with what would reach the host recorded instead:
    each command with its input."""

    def __init__(self, job: Job) -> None:
        super().__init__(job)
        self.sent: list[tuple[str, str | None]] = []

    def remote(self, command, *, stdin=None, **_):
        self.sent.append((command, stdin))
        return SimpleNamespace(stdout="8.2.0+build\n", exited=0)


def recording(dry_run: bool, **job) -> tuple[Recording, Log]:
    tentacle = TentacleOptions(version="8.2.0", source=URL)
    log = Log()
    values = dict(job_id=1, machine=machine(tentacle=tentacle), conn=None, log=log,
                  deadline_seconds=60, options=BootstrapOptions(), dry_run=dry_run)  # fmt: skip
    return Recording(Job(**{**values, **job})), log


def run_steps(dry_run: bool, host: Probe) -> tuple[Recording, Log, list[tuple[str, str]]]:
    pipeline, log = recording(dry_run)
    pipeline.probe = host
    answers = [pipeline.step_install(), pipeline.step_service()]
    return pipeline, log, answers


def test_a_dry_run_shows_the_actions_a_real_run_carries_out_and_goes_on_from_the_same_facts():
    older = probe(version="8.1.0")
    dry, log, dry_answers = run_steps(True, older)
    real, _, real_answers = run_steps(False, older)
    assert dry.sent == []  # a dry run applies nothing
    assert len(real.sent) == 2  # the upgrade, then the restart it makes due
    assert [line for line in log.lines if line.startswith("would ")] == [
        f"would run: {command}" for command, _ in real.sent
    ]
    assert [status for status, _ in dry_answers] == [State.WOULD_CHANGE, State.WOULD_CHANGE]
    assert dry_answers[0][1] == "would install Tentacle 8.1.0 → 8.2.0"
    assert dry_answers[1][1].endswith(" restarted")
    assert real_answers == [
        ("changed", "installed Tentacle 8.1.0 → 8.2.0"),
        ("changed", dry_answers[1][1].removeprefix("would have ")),
    ]
    assert replace(dry.probe, version="8.2.0") == real.probe  # type: ignore[type-var]
