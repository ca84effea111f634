"""`inv prune` on the sandbox, over real HTTP: records no inventory lists and duplicate records
are shown, then removed; records an inventory lists are never touched."""

import time

import pytest

from octoboot.bootstrap import bootstrap
from octoboot.errors import ConfigError
from octoboot.prune import prune
from octoboot.report import EXIT_FAILED, EXIT_OK, State
from octoboot.run import RunOptions, Selection
from octoboot.status import status
from tests.sandbox.project import by_name, inv, octopus_machines, quiet, writes_since
from tests.sandbox.project import request_count as requests_so_far

ALL = Selection(env="sandbox")


@pytest.fixture(scope="module")
def sandbox(sandbox_factory):
    return sandbox_factory(2, install_seconds=0.5)


@pytest.fixture(scope="module")
def herd(sandbox, settings, octopus):
    """Two machines bootstrapped, and the debris of a herd: a machine gone from the
    inventory (Unavailable), sbx01 registered a second time under its old name, and a
    machine another inventory file lists."""
    report = bootstrap(ALL, quiet(), settings)
    assert report.exit_code == EXIT_OK, report.table()
    records = octopus_machines(octopus)
    sbx01, environment = records["sbx01"], records["sbx01"]["EnvironmentIds"]

    def create(name, uri, thumbprint):
        body = {
            "Name": name,
            "EnvironmentIds": environment,
            "Roles": ["web"],
            "Endpoint": {"CommunicationStyle": "TentaclePassive", "Uri": uri,
                         "Thumbprint": thumbprint},
        }  # fmt: skip
        created = octopus.post("/api/Spaces-1/machines", json=body)
        created.raise_for_status()
        return created.json()

    gone = create("gone07", "https://127.0.0.1:1/", "AB" * 20)  # nothing listens there
    create("sbx01-old", sbx01["Endpoint"]["Uri"], sbx01["Endpoint"]["Thumbprint"])
    create("kept07", "https://127.0.0.1:2/", "CD" * 20)
    (settings.machines_dir / "other.toml").write_text(
        'environment = "Staging"\nroles = ["web"]\n\n[[machines]]\nname = "kept07"\n'
    )
    # A health check makes gone07 Unavailable, as a machine destroyed without a word is.
    task = octopus.post(
        "/api/Spaces-1/tasks",
        json={"Name": "Health", "Arguments": {"MachineIds": [gone["Id"]]}},
    ).json()
    deadline = time.monotonic() + 30
    while octopus.get(f"/api/tasks/{task['Id']}").json()["State"] != "Failed":
        assert time.monotonic() < deadline, "the health task did not end"
        time.sleep(0.1)
    assert octopus_machines(octopus)["gone07"]["HealthStatus"] == "Unavailable"
    return records


def run_prune(settings, lines=None, **options):
    flags = {k: options.pop(k) for k in ("older_than", "only_unavailable") if k in options}
    console = lines.append if lines is not None else (lambda line: None)
    return prune(ALL, RunOptions(console=console, **options), settings, **flags)


def test_status_reports_the_duplicate_and_the_unlisted(herd, settings):
    report = status(ALL, quiet(), settings)
    assert report.exit_code == EXIT_FAILED
    rows = by_name(report)
    assert rows["sbx01"].state == State.FAILED
    assert rows["sbx01"].facts["drift"] == "duplicate records"
    duplicate = rows["sbx01-old"].octopus_id
    assert f"also registered as sbx01-old ({duplicate})" in rows["sbx01"].reason
    assert rows["sbx02"].state == State.OK
    assert rows["gone07"].state == State.UNKNOWN and rows["sbx01-old"].state == State.UNKNOWN
    assert "kept07" not in rows  # listed, by another file


def test_dry_run_shows_what_would_go_and_removes_nothing(herd, sandbox, settings, octopus):
    before, offset = octopus_machines(octopus), requests_so_far(sandbox)
    lines: list[str] = []
    report = run_prune(settings, lines, dry_run=True)
    assert report.exit_code == EXIT_OK, report.table()
    rows = by_name(report)
    assert sorted(rows) == ["gone07", "sbx01-old"]
    assert {r.state for r in report.results} == {State.WOULD_CHANGE}
    assert rows["gone07"].reason == "no inventory lists it"
    assert rows["sbx01-old"].reason == (
        f"duplicate of sbx01 ({before['sbx01']['Id']}): the same certificate"
    )
    assert rows["gone07"].octopus_id == before["gone07"]["Id"]
    assert lines[:3] == [
        "prune: would remove 2 record(s) in Sandbox:",
        f"  gone07 ({before['gone07']['Id']}, Unavailable): no inventory lists it",
        f"  sbx01-old ({before['sbx01-old']['Id']}, Unknown): duplicate of sbx01 "
        f"({before['sbx01']['Id']}): the same certificate",
    ]
    assert writes_since(sandbox, offset) == []
    assert octopus_machines(octopus) == before


def test_older_than_and_only_unavailable_narrow_it(herd, sandbox, settings, octopus):
    offset = requests_so_far(sandbox)
    lines: list[str] = []
    young = run_prune(settings, lines, older_than="1h")
    assert young.results == [] and young.exit_code == EXIT_OK
    assert lines[0] == "prune: nothing to remove in Sandbox"
    assert writes_since(sandbox, offset) == []

    down = run_prune(settings, only_unavailable=True)
    assert [(r.machine, r.state) for r in down.results] == [("gone07", State.CHANGED)]
    left = octopus_machines(octopus)
    assert "gone07" not in left and "sbx01-old" in left


def test_prune_removes_the_duplicate_and_keeps_every_listed_record(herd, settings, octopus):
    before = octopus_machines(octopus)
    removed = inv(settings, "prune", "--env", "sandbox")
    assert removed.returncode == EXIT_OK, removed.stdout + removed.stderr
    assert "prune: removing 1 record(s) in Sandbox:" in removed.stderr
    assert "sbx01-old" in removed.stdout and "Traceback" not in removed.stderr
    after = octopus_machines(octopus)
    assert sorted(after) == ["kept07", "sbx01", "sbx02"]
    assert all(after[name]["Id"] == before[name]["Id"] for name in after)
    assert status(ALL, quiet(), settings).exit_code == EXIT_OK
    again = inv(settings, "prune", "--env", "sandbox")
    assert again.returncode == EXIT_OK and "nothing to remove" in again.stderr


def test_prune_is_refused_without_an_environment_or_with_hosts(herd, settings):
    with pytest.raises(ConfigError, match=r"^prune takes no --host or --retry-failed: "):
        prune(Selection(hosts=("sbx01",)), quiet(), settings)
    with pytest.raises(ConfigError, match=r"^prune takes no --host or --retry-failed: "):
        prune(Selection(env="sandbox", hosts=("sbx01",)), quiet(), settings)
    with pytest.raises(ConfigError, match=r"^prune needs --env: "):
        prune(Selection(), quiet(), settings)
    refused = inv(settings, "prune", "--env", "sandbox", "--older-than", "soon")
    assert refused.returncode == ConfigError.exit_code
    assert refused.stderr.strip() == (
        "octoboot: --older-than takes an age such as 30m, 12h, 7d or 2w, not 'soon'"
    )


def test_prune_of_a_workers_file_removes_the_workers_no_inventory_lists(herd, settings, octopus):
    """A file of workers (kind = "worker"): the workers in its pools that no inventory lists
    go, and a duplicate of a listed worker's certificate; listed workers and every target
    stay."""
    sandbox_file = (settings.machines_dir / "sandbox.toml").read_text()
    header = sandbox_file[sandbox_file.index("[octopus]") : sandbox_file.index("[[machines]]")]
    workers_file = settings.machines_dir / "workers.toml"
    workers_file.write_text(
        f'kind = "worker"\nworker_pools = ["Linux workers"]\n\n{header}\n'
        '[[machines]]\nname = "build01"\naddress = "127.0.0.1"\n'
    )
    pools = octopus.get("/api/Spaces-1/workerpools/all").json()
    (pool,) = [p["Id"] for p in pools if p["Name"] == "Linux workers"]

    def worker(name, port, thumbprint):
        body = {
            "Name": name,
            "WorkerPoolIds": [pool],
            "Endpoint": {"CommunicationStyle": "TentaclePassive",
                         "Uri": f"https://127.0.0.1:{port}/", "Thumbprint": thumbprint},
        }  # fmt: skip
        created = octopus.post("/api/Spaces-1/workers", json=body)
        assert created.status_code == 201, created.text
        return created.json()

    def workers() -> dict[str, dict]:
        return {w["Name"]: w for w in octopus.get("/api/Spaces-1/workers/all").json()}

    try:
        listed = worker("build01", 3, "EF" * 20)
        gone = worker("build09", 4, "01" * 20)
        old = worker("build01-old", 5, "EF" * 20)
        targets = octopus_machines(octopus)
        lines: list[str] = []
        planned = prune(
            Selection(env="workers"), RunOptions(console=lines.append, dry_run=True),
            settings,
        )  # fmt: skip
        assert planned.exit_code == EXIT_OK, planned.table()
        assert sorted(by_name(planned)) == ["build01-old", "build09"]
        assert lines[0] == "prune: would remove 2 record(s) in worker pool Linux workers:"
        assert by_name(planned)["build01-old"].reason == (
            f"duplicate of build01 ({listed['Id']}): the same certificate"
        )
        assert sorted(workers()) == ["build01", "build01-old", "build09"]

        narrowed = prune(Selection(env="workers"), quiet(), settings, older_than="1h")
        assert narrowed.results == [] and len(workers()) == 3  # all younger than 1h

        removed = inv(settings, "prune", "--env", "workers")
        assert removed.returncode == EXIT_OK, removed.stdout + removed.stderr
        assert "prune: removing 2 record(s) in worker pool Linux workers:" in removed.stderr
        assert f"{gone['Id']}" in removed.stderr and f"{old['Id']}" in removed.stderr
        assert sorted(workers()) == ["build01"]
        assert workers()["build01"]["Id"] == listed["Id"]
        assert octopus_machines(octopus) == targets  # no target was touched
    finally:
        workers_file.unlink()
        for w in workers().values():
            octopus.delete(f"/api/Spaces-1/workers/{w['Id']}")
