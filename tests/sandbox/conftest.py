"""Fixtures for tests against the real sandbox: sshd hosts in network namespaces, the
Octopus stand-in over HTTP. Each module gets its own sandbox (its own slot, subnet and
folder), taken down at the end by the PIDs and names it recorded."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko
import pytest
from fabric import Config, Connection

from octoboot.sandbox.control import Sandbox
from tests.sandbox.project import FAST, octopus_client, project_settings

SANDBOX_TESTS = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in this folder needs the sandbox: `pytest -m "not sandbox"` skips them all,
    without each module having to say so."""
    for item in items:
        if SANDBOX_TESTS in item.path.resolve().parents:
            item.add_marker(pytest.mark.sandbox)


def connect(sandbox: Sandbox, host: str) -> Connection:
    ssh_config = paramiko.SSHConfig.from_path(str(sandbox.endpoints().ssh_config))
    config = Config(ssh_config=ssh_config)
    config.run.in_stream = False
    return Connection(host, config=config, connect_timeout=10)


@pytest.fixture(scope="module")
def sandbox_factory(tmp_path_factory) -> Iterator[Callable[..., Sandbox]]:
    made: list[Sandbox] = []

    def make(hosts: int, **options) -> Sandbox:
        """A sandbox of `hosts` hosts; the stand-ins are FAST unless `settings` says."""
        sandbox = Sandbox(tmp_path_factory.mktemp("sandbox") / "sb")
        made.append(sandbox)
        sandbox.up(hosts, **{"settings": FAST, **options})
        return sandbox

    yield make
    for sandbox in made:
        sandbox.down()


@pytest.fixture(scope="module")
def ssh(request) -> Iterator[Callable[[Sandbox, str], Connection]]:
    opened: list[Connection] = []

    def open_(sandbox: Sandbox, host: str) -> Connection:
        conn = connect(sandbox, host)
        opened.append(conn)
        return conn

    yield open_
    for conn in opened:
        conn.close()


def run(conn: Connection, command: str, **kwargs):
    return conn.run(command, hide=True, warn=True, in_stream=False, **kwargs)


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


# A project (machines/, .env, .octoboot/) aimed at the module's sandbox: modules that use
# these define a module-scoped `sandbox` fixture.


@pytest.fixture(scope="module")
def project(sandbox, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("project")
    sandbox.write_target_files(root / "machines", root / ".env")
    return root


@pytest.fixture(scope="module")
def settings(project):
    return project_settings(project)


@pytest.fixture(scope="module")
def octopus(sandbox):
    client = octopus_client(sandbox)
    yield client
    client.close()
