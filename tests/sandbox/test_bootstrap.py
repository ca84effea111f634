"""inv bootstrap end to end on the sandbox: real sshd hosts, the Tentacle stand-in, the
Octopus stand-in over real HTTP."""

import json
from pathlib import Path

import pytest

from octoboot.bootstrap import bootstrap
from octoboot.report import EXIT_FAILED, EXIT_OK, State
from octoboot.run import RunOptions, Selection
from tests.sandbox.project import by_name, inv, octopus_machines, request_count, writes_since

FIVE = ("sbx01", "sbx02", "sbx03", "sbx04", "sbx05")


@pytest.fixture(scope="module")
def sandbox(sandbox_factory):
    return sandbox_factory(6, install_seconds=1)


def quiet():
    lines = []
    return lines, RunOptions(parallel=True, console=lines.append)


@pytest.fixture(scope="module")
def first_run(sandbox, settings):
    lines, options = quiet()
    report = bootstrap(Selection(env="sandbox", limits=("sbx0[1-5]",)), options, settings)
    return report, lines


def test_parallel_bootstrap_makes_every_machine_a_healthy_target(
    first_run, octopus, settings, sandbox
):
    report, lines = first_run
    assert report.exit_code == EXIT_OK, report.table()
    results = by_name(report)
    assert sorted(results) == list(FIVE)
    registered = octopus_machines(octopus)
    store = settings.state_dir / "identities"
    for name in FIVE:
        row, machine = results[name], registered[name]
        assert row.state == State.CHANGED and row.environment == "Sandbox"
        assert row.octopus_id == machine["Id"]
        assert row.thumbprint == machine["Endpoint"]["Thumbprint"]
        assert machine["HealthStatus"] == "Healthy"
        assert machine["Endpoint"]["Uri"] == f"https://{sandbox.host(name).address}:10933/"
        assert (store / f"{name}.pfx").exists()
        assert [s.name for s in row.steps] == [
            "connect", "probe", "install", "identity", "configure", "register", "service",
            "health",
        ]  # fmt: skip
        log = Path(row.log)
        assert log.parent == Path(report.run_dir) and "=== changed" in log.read_text()
    assert "sbx06" not in registered
    # one line per machine as it finished, nothing else
    assert sorted(line.split()[1] for line in lines) == [f"{n}:" for n in FIVE]
    assert json.loads((Path(report.run_dir) / "report.json").read_text())["exit_code"] == 0


def test_rerun_sequentially_changes_nothing(first_run, octopus, settings, sandbox):
    before = octopus_machines(octopus)
    offset = request_count(sandbox)
    lines = []
    report = bootstrap(
        Selection(env="sandbox", limits=("sbx0[1-5]",)),
        RunOptions(parallel=False, console=lines.append),
        settings,
    )
    assert report.exit_code == EXIT_OK, report.table()
    after = octopus_machines(octopus)
    for name, row in by_name(report).items():
        assert row.state == State.UNCHANGED, row
        assert row.octopus_id == before[name]["Id"]
        assert row.thumbprint == before[name]["Endpoint"]["Thumbprint"]
        assert after[name]["LastModifiedOn"] == before[name]["LastModifiedOn"]
    assert len(after) == len(before)
    assert [w for w in writes_since(sandbox, offset) if "/machines" in w["path"]] == []
    # sequential output streams each machine's steps as they happen
    assert any(line.strip().startswith("install: unchanged") for line in lines)
    # the service was installed and started once, by the first run, and not touched since
    for name in FIVE:
        service_calls = [c for c in sandbox.host(name).tentacle_calls() if c[1:2] == ["service"]]
        assert len(service_calls) == 1, service_calls


def test_host_selects_only_that_machine(first_run, octopus, settings):
    _, options = quiet()
    report = bootstrap(Selection(hosts=("sbx06",)), options, settings)
    assert [r.machine for r in report.results] == ["sbx06"]
    assert report.results[0].state == State.CHANGED
    assert octopus_machines(octopus)["sbx06"]["HealthStatus"] == "Healthy"


def test_an_untrusting_tentacle_fails_at_health_and_the_others_succeed(
    first_run, sandbox, settings
):
    sandbox.set_faults("sbx06", untrusting=True)
    sandbox.stop_host("sbx06")  # restart it so that its service reads the fault
    sandbox.start_host("sbx06")
    try:
        _, options = quiet()
        report = bootstrap(Selection(env="sandbox", hosts=("sbx06", "sbx01")), options, settings)
    finally:
        sandbox.set_faults("sbx06", untrusting=False)
    rows = by_name(report)
    assert report.exit_code == EXIT_FAILED
    assert rows["sbx01"].state == State.UNCHANGED
    assert rows["sbx06"].state == State.FAILED and rows["sbx06"].failed_step == "health"
    assert "Unavailable" in rows["sbx06"].reason and "trust" in rows["sbx06"].reason


def test_no_secret_reaches_a_host_a_log_or_the_report_and_no_pfx_stays(
    first_run, sandbox, settings
):
    secrets = [sandbox.api_key(), settings.pfx_password().reveal()]
    for host in sandbox.hosts():
        calls = json.dumps(host.tentacle_calls())
        assert host.tentacle_calls(), f"{host.name} was never called"
        for secret in secrets:
            assert secret not in calls
        leftovers = [
            p
            for folder in ("/tmp", "/opt/octopus", "/etc/octopus", "/home/Octopus")
            for p in host.disk_path(folder).rglob("*")
            if p.suffix == ".pfx" or p.name.startswith("octoboot-")
        ]
        assert leftovers == [], f"{host.name}: {leftovers}"
    runs = settings.state_dir / "runs"
    texts = [p.read_text() for p in runs.rglob("*") if p.is_file()]
    assert texts
    for secret in secrets:
        assert not any(secret in text for text in texts)


def test_cli_json_output_is_only_json_and_exit_code_follows(first_run, settings):
    proc = inv(settings, "bootstrap", "--host", "sbx02", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert [m["machine"] for m in data["machines"]] == ["sbx02"]
    assert data["machines"][0]["state"] == "unchanged"
    assert "sbx02: unchanged" in proc.stderr


def test_cli_unknown_environment_is_one_line_and_exit_2(first_run, settings):
    proc = inv(settings, "bootstrap", "--env", "nope")
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "nope" in lines[0] and "sandbox" in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--workers", "4"], "--workers applies only with --parallel"),
        (["--parallel", "--workers", "many"], "--workers takes a number"),
        (["--deadline", "-5"], "--deadline must be more than 0"),
        (["--format", "xml"], "--format must be table or json"),
        (["--retry-failed"], "--retry-failed needs --env"),
        (["--host", "sbx0l"], "did you mean"),
    ],
)
def test_cli_bad_flags_are_one_line_and_exit_2(first_run, settings, flags, words):
    selection = [] if {"--host", "--retry-failed"} & set(flags) else ["--env", "sandbox"]
    proc = inv(settings, "bootstrap", *flags, *selection)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], proc.stderr
