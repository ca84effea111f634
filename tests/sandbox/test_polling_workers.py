"""Polling Tentacles and workers on the sandbox, end to end: real sshd hosts, two of them
reachable only over SSH (as behind NAT), the Tentacle stand-in, the Octopus stand-in and its
polling endpoint over real HTTP and TLS."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from octoboot.bootstrap import bootstrap as run_bootstrap
from octoboot.deregister import deregister
from octoboot.report import EXIT_FAILED, State
from octoboot.run import RunOptions, Selection
from octoboot.sandbox import net
from octoboot.status import status
from octoboot.status.table import StatusReport
from tests.sandbox.conftest import connect, run
from tests.sandbox.project import by_name, inv, request_count, writes_since

LISTENING_WORKER, TARGET, POLLING_WORKER = "sbx01", "sbx03", "sbx04"  # sbx03, sbx04: SSH only
QUEUE_SECONDS = 4


@pytest.fixture(scope="module")
def sandbox(sandbox_factory):
    # Short waits where Octopus waits for what cannot come: a listening Tentacle behind the
    # firewall, a polling one that is not connected.
    options = {"polling_queue_timeout": QUEUE_SECONDS, "connect_timeout": QUEUE_SECONDS}
    return sandbox_factory(4, install_seconds=0.5, ssh_only=2, octopus_options=options)


def header(project: Path) -> str:
    """The sandbox inventory's [octopus], [ssh] and [tentacle] tables."""
    text = (project / "machines" / "sandbox.toml").read_text()
    return text[text.index("[octopus]") : text.index("[[machines]]")]


def write_inventory(project: Path, name: str, top: str, machines: str) -> None:
    """machines/<name>.toml, beside the sandbox's own file (which this module never
    selects: --env picks one file)."""
    (project / "machines" / f"{name}.toml").write_text(f"{top}\n{header(project)}\n{machines}")


TARGETS_TOP = 'environment = "Sandbox"\nroles = ["web"]\n'
WORKERS_TOP = 'kind = "worker"\nworker_pools = ["Linux workers"]\n'


@pytest.fixture(scope="module")
def inventory(project):
    """targets.toml (sbx03) and workers.toml (sbx01 listening, sbx04 polling)."""
    write_inventory(project, "targets", TARGETS_TOP, f'[[machines]]\nname = "{TARGET}"\n')
    write_inventory(
        project,
        "workers",
        WORKERS_TOP,
        f'[[machines]]\nname = "{LISTENING_WORKER}"\n\n'
        f'[[machines]]\nname = "{POLLING_WORKER}"\ncommunication = "polling"\n',
    )
    return project


def quiet(**options) -> RunOptions:
    return RunOptions(parallel=True, console=lambda line: None, **options)


def bootstrap(settings, **selection):
    options = {k: selection.pop(k) for k in ("dry_run", "accept_new_host_key") if k in selection}
    return run_bootstrap(Selection(**selection), quiet(**options), settings)


def run_status(settings, health=False, **selection) -> StatusReport:
    return status(Selection(**selection), quiet(), settings, health=health)


def records(octopus, collection: str) -> dict[str, dict]:
    return {r["Name"]: r for r in octopus.get(f"/api/Spaces-1/{collection}/all").json()}


def host_servers(sandbox, name: str) -> list[dict]:
    """The Octopus Servers the host's Tentacle trusts, as show-configuration prints them."""
    conn = connect(sandbox, name)
    try:
        shown = run(conn, "/opt/octopus/tentacle/Tentacle show-configuration --instance Tentacle")
    finally:
        conn.close()
    return json.loads(shown.stdout)["Tentacle"]["Communication"]["TrustedOctopusServers"]


def host_subscription(sandbox, name: str) -> str:
    (polling,) = [s for s in host_servers(sandbox, name) if s["CommunicationStyle"] == 2]
    return polling["SubscriptionId"]


@pytest.fixture(scope="module")
def listening_attempt(inventory, settings):
    """sbx03 registered as a listening target first: Octopus cannot reach its port."""
    return bootstrap(settings, env="targets")


def test_the_sandbox_inventory_lists_its_ssh_only_hosts_as_polling(project, sandbox):
    text = (project / "machines" / "sandbox.toml").read_text()
    entries = {e.split('"')[1]: e for e in text.split("[[machines]]")[1:]}
    assert [n for n, e in entries.items() if 'communication = "polling"' in e] == [
        TARGET, POLLING_WORKER
    ]  # fmt: skip
    assert [sandbox.ssh_only(h.name) for h in sandbox.hosts()] == [False, False, True, True]


def test_a_listening_registration_of_an_ssh_only_host_fails_its_health_check(
    listening_attempt, octopus
):
    (row,) = listening_attempt.results
    assert listening_attempt.exit_code == EXIT_FAILED
    assert (row.state, row.failed_step) == (State.FAILED, "health"), row
    assert "Unavailable" in row.reason and "Timed out" in row.reason
    record = records(octopus, "machines")[TARGET]
    assert record["Endpoint"]["CommunicationStyle"] == "TentaclePassive"


@pytest.fixture(scope="module")
def polling_target(listening_attempt, project, settings, sandbox):
    write_inventory(
        project,
        "targets",
        TARGETS_TOP,
        f'[[machines]]\nname = "{TARGET}"\ncommunication = "polling"\n',
    )
    return bootstrap(settings, env="targets")


def test_switched_to_polling_the_same_record_is_healthy(
    listening_attempt, polling_target, octopus, sandbox
):
    (row,) = polling_target.results
    assert row.state == State.CHANGED, row
    steps = {s.name: s.detail for s in row.steps}
    assert "updated" in steps["register"] and "communication style" in steps["register"]
    record = records(octopus, "machines")[TARGET]
    assert record["Id"] == listening_attempt.results[0].octopus_id == row.octopus_id
    assert record["HealthStatus"] == "Healthy"
    subscription = host_subscription(sandbox, TARGET)
    assert record["Endpoint"] == {
        **record["Endpoint"], "CommunicationStyle": "TentacleActive", "Uri": subscription,
        "Thumbprint": row.thumbprint,
    }  # fmt: skip
    assert len([r for r in records(octopus, "machines").values() if r["Name"] == TARGET]) == 1


@pytest.fixture(scope="module")
def workers_dry_run(polling_target, settings, sandbox):
    offset = request_count(sandbox)
    report = bootstrap(settings, env="workers", dry_run=True)
    return report, writes_since(sandbox, offset)


@pytest.fixture(scope="module")
def workers_run(workers_dry_run, settings):
    return bootstrap(settings, env="workers")


def test_a_dry_run_of_workers_says_what_it_would_create_and_writes_nothing(workers_dry_run):
    report, writes = workers_dry_run
    assert writes == []
    for row in report.results:
        assert row.state == State.WOULD_CHANGE and row.environment == "pools Linux workers"
        steps = {s.name: s.detail for s in row.steps}
        assert steps["register"] == "would create a worker in Linux workers"


def test_a_listening_and_a_polling_worker_are_healthy_in_their_static_pool(
    workers_run, octopus, sandbox
):
    assert workers_run.exit_code == 0, workers_run.table()
    pool = octopus.get("/api/Spaces-1/workerpools", params={"name": "Linux workers"}).json()
    pool_id = pool["Items"][0]["Id"]
    workers = records(octopus, "workers")
    for name, row in by_name(workers_run).items():
        worker = workers[name]
        assert row.state == State.CHANGED and row.octopus_id == worker["Id"]
        assert worker["Id"].startswith("Workers-") and worker["WorkerPoolIds"] == [pool_id]
        assert worker["HealthStatus"] == "Healthy"
        assert "EnvironmentIds" not in worker
    assert workers[LISTENING_WORKER]["Endpoint"]["CommunicationStyle"] == "TentaclePassive"
    assert workers[POLLING_WORKER]["Endpoint"]["Uri"] == host_subscription(sandbox, POLLING_WORKER)
    # workers are not deployment targets
    assert not {LISTENING_WORKER, POLLING_WORKER} & set(records(octopus, "machines"))


def test_a_polling_host_configures_itself_and_never_runs_register_with(
    workers_run, octopus, sandbox
):
    calls = sandbox.host(POLLING_WORKER).tentacle_calls()
    commands = [argv[1] for argv in calls]
    # what changes the host, in order (run: the service's own process); no register-with
    assert [c for c in commands if c not in ("version", "show-configuration")] == [
        "create-instance", "import-certificate", "configure", "server-comms", "service", "run",
    ]  # fmt: skip
    configure, server_comms = (calls[commands.index(c)] for c in ("configure", "server-comms"))

    def option(argv: list[str], name: str) -> str:
        return argv[argv.index(name) + 1]

    server = octopus.get("/api/configuration/certificates/certificate-global").json()
    thumbprint = server["Thumbprint"].upper()
    assert (option(configure, "--noListen"), option(configure, "--trust")) == ("True", thumbprint)
    assert configure.index("--reset-trust") < configure.index("--trust")
    octopus_host = net.Slot(sandbox.state()["slot"]).octopus_address
    assert [option(server_comms, o) for o in ("--thumbprint", "--style", "--host", "--port")] == [
        thumbprint, "TentacleActive", octopus_host, "10943",
    ]  # fmt: skip
    # the subscription is read back (show-configuration) after server-comms made it
    assert "show-configuration" in commands[commands.index("server-comms") :]


def test_a_rerun_changes_nothing_for_targets_and_workers(workers_run, settings, sandbox):
    offset = request_count(sandbox)
    for env in ("targets", "workers"):
        report = bootstrap(settings, env=env)
        assert {r.state for r in report.results} == {State.UNCHANGED}, report.table()
    assert [w for w in writes_since(sandbox, offset) if "/tasks" not in w["path"]] == []


def test_status_shows_the_subscription_on_both_sides_and_calls_a_mismatch_drift(
    workers_run, settings, octopus, sandbox
):
    (row,) = run_status(settings, env="targets").results
    assert row.state == State.OK, row
    subscription = host_subscription(sandbox, TARGET)
    assert row.facts["host_subscription"] == row.facts["octopus_subscription"] == subscription

    record = records(octopus, "machines")[TARGET]
    other = "poll://zzzzzzzzzzzzzzzzzzzz/"
    octopus.put(record["Links"]["Self"],
                json={**record, "Endpoint": {**record["Endpoint"], "Uri": other}})  # fmt: skip
    report = run_status(settings, env="targets")
    (row,) = report.results
    assert row.state == State.FAILED and row.facts["drift"] == "subscription"
    assert f"subscription (Octopus {other}, host {subscription})" in row.reason
    assert "host subscription" in report.table() and "poll://zzzzzzzz…/" in report.table()

    offset = request_count(sandbox)
    (planned,) = bootstrap(settings, env="targets", dry_run=True).results
    assert planned.state == State.WOULD_CHANGE
    assert {s.name: s.detail for s in planned.steps}["register"] == (
        f"would update {record['Id']}: subscription"
    )
    assert writes_since(sandbox, offset) == []
    (fixed,) = bootstrap(settings, env="targets").results
    assert fixed.state == State.CHANGED and fixed.octopus_id == record["Id"]
    assert records(octopus, "machines")[TARGET]["Endpoint"]["Uri"] == subscription
    assert run_status(settings, env="targets").results[0].state == State.OK


def test_status_lists_a_worker_only_octopus_has_in_the_pool(workers_run, settings, octopus):
    pool_id = records(octopus, "workers")[LISTENING_WORKER]["WorkerPoolIds"][0]
    stray = octopus.post(
        "/api/Spaces-1/workers",
        json={"Name": "stray-worker", "WorkerPoolIds": [pool_id],
              "Endpoint": {"CommunicationStyle": "TentaclePassive",
                           "Uri": "https://10.99.0.9:10933/", "Thumbprint": "C" * 40}},
    ).json()  # fmt: skip
    try:
        rows = by_name(run_status(settings, env="workers"))
        assert rows[LISTENING_WORKER].state == State.OK and rows[POLLING_WORKER].state == State.OK
        assert rows["stray-worker"].state == State.UNKNOWN
        assert "pool Linux workers" in rows["stray-worker"].reason
    finally:
        octopus.delete(stray["Links"]["Self"])


def test_a_rebuilt_polling_machine_keeps_its_record_and_thumbprint_with_its_new_subscription(
    workers_run, settings, octopus, sandbox
):
    before = records(octopus, "machines")[TARGET]
    old_subscription = before["Endpoint"]["Uri"]
    sandbox.rebuild_host(TARGET)  # an empty disk: no Tentacle, no configuration
    report = bootstrap(settings, env="targets", hosts=(TARGET,), accept_new_host_key=True)
    (row,) = report.results
    assert row.state == State.CHANGED, row
    after = records(octopus, "machines")
    record = after[TARGET]
    new_subscription = host_subscription(sandbox, TARGET)
    assert new_subscription != old_subscription
    assert record["Id"] == before["Id"]
    assert record["Endpoint"]["Thumbprint"] == before["Endpoint"]["Thumbprint"] == row.thumbprint
    assert record["Endpoint"]["Uri"] == new_subscription and record["HealthStatus"] == "Healthy"
    # no second record, by name or by certificate
    same = octopus.get("/api/Spaces-1/machines/all", params={"thumbprint": row.thumbprint}).json()
    assert [r["Id"] for r in same] == [before["Id"]]
    assert len(after) == len(records(octopus, "machines"))


def test_switched_back_to_listening_the_same_record_is_healthy(
    workers_run, project, settings, octopus, sandbox
):
    """Polling to listening, in place (listening to polling: sbx03 above). sbx02 is
    reachable, and in no other file of this module."""
    machine = '[[machines]]\nname = "sbx02"\n'
    write_inventory(project, "switch", TARGETS_TOP, f'{machine}communication = "polling"\n')
    try:
        (polled,) = bootstrap(settings, env="switch").results
        assert polled.state == State.CHANGED, polled
        before = records(octopus, "machines")["sbx02"]
        assert before["Endpoint"]["CommunicationStyle"] == "TentacleActive"
        assert before["HealthStatus"] == "Healthy"

        write_inventory(project, "switch", TARGETS_TOP, machine)
        (row,) = bootstrap(settings, env="switch").results
        assert row.state == State.CHANGED, row
        register = {s.name: s.detail for s in row.steps}["register"]
        assert f"updated {before['Id']}" in register and "communication style" in register
        record = records(octopus, "machines")["sbx02"]
        assert record["Id"] == before["Id"] == row.octopus_id
        assert record["Endpoint"]["CommunicationStyle"] == "TentaclePassive"
        assert record["Endpoint"]["Uri"].endswith(":10933/")
        assert record["Endpoint"]["Thumbprint"] == before["Endpoint"]["Thumbprint"]
        assert record["HealthStatus"] == "Healthy"
        assert [s["CommunicationStyle"] for s in host_servers(sandbox, "sbx02")] == [1]
        same = octopus.get(
            "/api/Spaces-1/machines/all", params={"thumbprint": row.thumbprint}
        ).json()
        assert [r["Id"] for r in same] == [before["Id"]]
        assert run_status(settings, env="switch").results[0].state == State.OK
    finally:
        (project / "machines" / "switch.toml").unlink()


def test_polling_tentacles_connect_again_after_octopus_restarts(workers_run, settings, sandbox):
    sandbox.stop_octopus()
    sandbox.start_octopus()
    for env in ("targets", "workers"):
        report = run_status(settings, health=True, env=env)
        for row in report.results:
            assert row.state == State.OK and row.facts["health"] == "Healthy", row


def test_a_polling_tentacle_that_cannot_connect_is_unavailable_and_retried(
    workers_run, settings, sandbox
):
    host = sandbox.host(POLLING_WORKER)
    octopus_address = net.Slot(sandbox.state()["slot"]).octopus_address
    net.set_blackhole(host.namespace, octopus_address, True)
    try:
        conn = connect(sandbox, POLLING_WORKER)
        try:  # a new start, whose connection to Octopus cannot be made
            assert run(conn, "systemctl restart Tentacle.service").ok
        finally:
            conn.close()
        report = bootstrap(settings, env="workers")
        rows = by_name(report)
        assert rows[LISTENING_WORKER].state == State.UNCHANGED
        row = rows[POLLING_WORKER]
        assert (row.state, row.failed_step) == (State.FAILED, "health"), row
        assert "Unavailable" in row.reason
        assert "did not collect the request within the allowed time" in row.reason
    finally:
        net.set_blackhole(host.namespace, octopus_address, False)
    retried = run_bootstrap(Selection(env="workers", retry_failed=True), quiet(), settings)
    assert [(r.machine, r.state) for r in retried.results] == [(POLLING_WORKER, State.UNCHANGED)]


def test_dynamic_pools_and_workers_with_roles_are_one_line_and_exit_2(
    workers_run, settings, project, sandbox
):
    odd = project / "machines" / "odd.toml"
    cases = {
        'worker_pools = ["Hosted Ubuntu"]': '"Hosted Ubuntu" (WorkerPools-3) is a Dynamic',
        'worker_pools = ["Nowhere"]': "no worker pool named, with slug or Id 'Nowhere'",
        'worker_pools = ["Linux workers"]\nroles = ["web"]': "takes no roles",
    }
    calls = len(sandbox.host("sbx02").tentacle_calls())
    try:
        for top, words in cases.items():
            odd.write_text(
                f'kind = "worker"\n{top}\n{header(project)}\n[[machines]]\nname = "sbx02"\n'
            )
            proc = inv(settings, "bootstrap", "--env", "odd")
            lines = proc.stderr.strip().splitlines()
            assert proc.returncode == 2 and len(lines) == 1, proc.stderr
            assert words in lines[0] and "Traceback" not in proc.stderr
    finally:
        odd.unlink()
    assert len(sandbox.host("sbx02").tentacle_calls()) == calls  # nothing touched


def test_deregister_removes_a_worker_from_its_pool(workers_run, settings, octopus):
    report = deregister(Selection(env="workers", hosts=(LISTENING_WORKER,)), quiet(), settings)
    (row,) = report.results
    assert row.state == State.CHANGED and "deleted Workers-" in row.steps[0].detail
    assert LISTENING_WORKER not in records(octopus, "workers")
    assert POLLING_WORKER in records(octopus, "workers")


def test_no_api_key_on_any_host_in_any_argv_or_log(workers_run, sandbox, settings):
    key = sandbox.api_key()
    for host in sandbox.hosts():
        assert key not in json.dumps(host.tentacle_calls())
        for folder in ("/tmp", "/opt/octopus", "/etc/octopus", "/home/Octopus"):
            for path in host.disk_path(folder).rglob("*"):
                if path.is_file():
                    assert key.encode() not in path.read_bytes(), path
    texts = [p.read_text() for p in (settings.state_dir / "runs").rglob("*") if p.is_file()]
    assert texts and not any(key in text for text in texts)
