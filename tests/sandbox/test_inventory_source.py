"""An inventory whose machines come from a command ([source]), on the sandbox: the sandbox's
example command lists its hosts, and they are bootstrapped from that list over real SSH and
HTTP; a command that fails stops the run before anything is touched."""

import json
import tomllib

import pytest

from octoboot.bootstrap import bootstrap
from octoboot.errors import ConfigError
from octoboot.report import EXIT_OK, State
from octoboot.run import Selection
from octoboot.status import status
from tests.sandbox.project import (
    by_name,
    inv,
    octopus_machines,
    project_settings,
    quiet,
    request_count,
)

ALL = Selection(env="sandbox")


@pytest.fixture(scope="module")
def sandbox(sandbox_factory):
    return sandbox_factory(2, install_seconds=0.5)


@pytest.fixture(scope="module")
def project(sandbox, tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    sandbox.write_target_files(root / "machines", root / ".env", from_command=True)
    return root


@pytest.fixture(scope="module")
def settings(project):
    return project_settings(project)


def test_the_sandbox_example_lists_its_hosts_with_a_command(sandbox, settings, octopus):
    text = (settings.machines_dir / "sandbox.toml").read_text()
    inventory = tomllib.loads(text)
    assert "machines" not in inventory and "list_hosts.py" in inventory["source"]["command"]
    hosts = {h.name: h.address for h in sandbox.hosts()}
    report = bootstrap(ALL, quiet(), settings)
    assert report.exit_code == EXIT_OK, report.table()
    assert {r.machine: r.state for r in report.results} == dict.fromkeys(hosts, State.CHANGED)
    records = octopus_machines(octopus)
    for name, address in hosts.items():
        assert records[name]["Endpoint"]["Uri"] == f"https://{address}:10933/"
        assert records[name]["HealthStatus"] == "Healthy"
    again = status(ALL, quiet(), settings)
    assert again.exit_code == EXIT_OK, again.table()
    assert sorted(by_name(again)) == sorted(hosts)


def test_a_failing_command_stops_the_run_before_anything_is_touched(sandbox, settings):
    inventory = settings.machines_dir / "sandbox.toml"
    original = inventory.read_text()
    command = "echo 'cloud API: 401' >&2; exit 4"
    inventory.write_text(original.replace("command = ", f"command = {json.dumps(command)}\n# "))
    offset = request_count(sandbox)
    calls = {h.name: len(h.tentacle_calls()) for h in sandbox.hosts()}
    try:
        proc = inv(settings, "bootstrap", "--env", "sandbox")
        with pytest.raises(ConfigError, match="failed"):
            status(ALL, quiet(), settings)
    finally:
        inventory.write_text(original)
    assert proc.returncode == ConfigError.exit_code
    assert proc.stderr.strip().splitlines() == [
        f"octoboot: {inventory}: [source] command {command!r} failed (exit 4): cloud API: 401"
    ]
    assert request_count(sandbox) == offset  # Octopus was not even asked
    assert {h.name: len(h.tentacle_calls()) for h in sandbox.hosts()} == calls
