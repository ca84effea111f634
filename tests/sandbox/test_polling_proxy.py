"""A polling machine's own proxy (`polling_proxy`) on the sandbox, over real SSH and HTTP: the
Tentacle stand-in's polling service reaches Octopus only through the proxy its settings name,
so Healthy means the proxy was used; a changed proxy is drift in `inv status`, a dry run says
what it would set, `register` sets it, and none in the inventory clears it."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest

from octoboot.bootstrap import bootstrap, register
from octoboot.report import EXIT_FAILED, EXIT_OK, State
from octoboot.run import Selection
from octoboot.sandbox import net
from octoboot.status import status
from tests.sandbox.conftest import connect, run
from tests.sandbox.connect_proxy import ConnectProxy
from tests.sandbox.project import by_name, inv, octopus_machines, quiet

ALL = Selection(env="sandbox")
MACHINE = "sbx01"  # reachable over SSH only: it polls
CONFIG = "/etc/octopus/Tentacle/tentacle-Tentacle.config"
QUEUE_SECONDS = 4


@pytest.fixture(scope="module")
def sandbox(sandbox_factory):
    # Short waits where Octopus waits for a polling Tentacle that does not connect.
    options = {"polling_queue_timeout": QUEUE_SECONDS, "connect_timeout": QUEUE_SECONDS}
    return sandbox_factory(1, install_seconds=0.5, ssh_only=1, octopus_options=options)


@pytest.fixture(scope="module")
def proxies(sandbox) -> Iterator[tuple[ConnectProxy, ConnectProxy]]:
    """Two HTTP CONNECT proxies on the controller's side of the sandbox's bridge, where the
    Octopus stand-in's polling endpoint is: the host reaches both, as a corporate proxy."""
    address = net.Slot(sandbox.state()["slot"]).controller_address
    with ConnectProxy(address) as first, ConnectProxy(address) as second:
        yield first, second


@contextmanager
def polling_proxy(settings, host: str, port: int) -> Iterator[None]:
    """sbx01 with this polling_proxy in machines/sandbox.toml, for the block."""
    path = settings.machines_dir / "sandbox.toml"
    original = path.read_text()
    path.write_text(f"{original}polling_proxy = {{ host = {json.dumps(host)}, port = {port} }}\n")
    try:
        yield
    finally:
        path.write_text(original)


def host_settings(sandbox) -> tuple[dict[str, str], str]:
    """The Tentacle's Octopus.Server.Proxy.* settings on the host, and where it polls."""
    conn = connect(sandbox, MACHINE)
    try:
        config = run(conn, f"cat {CONFIG}").stdout
        shown = run(conn, "/opt/octopus/tentacle/Tentacle show-configuration --instance Tentacle")
    finally:
        conn.close()
    prefix = '<set key="Octopus.Server.Proxy.'
    found = {}
    for line in config.splitlines():
        line = line.strip()
        if line.startswith(prefix):
            key, _, rest = line[len(prefix) :].partition('"')
            found[key] = rest.removeprefix(">").removesuffix("</set>").removesuffix(" />")
    servers = json.loads(shown.stdout)["Tentacle"]["Communication"]["TrustedOctopusServers"]
    (address,) = [s["Address"] for s in servers if s["CommunicationStyle"] == 2]
    return found, f"{urlsplit(address).hostname}:{urlsplit(address).port}"


def steps(report) -> dict[str, tuple[str, str]]:
    return {s.name: (s.status, s.detail) for s in by_name(report)[MACHINE].steps}


@pytest.fixture(scope="module")
def through_first(sandbox, settings, proxies):
    first, _ = proxies
    with polling_proxy(settings, first.host, first.port):
        report = bootstrap(ALL, quiet(), settings)
        again = bootstrap(ALL, quiet(), settings)
        checked = status(ALL, quiet(), settings)
    return report, again, checked


def test_a_polling_machine_is_healthy_through_its_proxy(through_first, proxies, sandbox, octopus):
    report, again, checked = through_first
    first, second = proxies
    assert report.exit_code == EXIT_OK, report.table()
    status_, detail = steps(report)["configure"]
    assert (
        status_ == "changed"
        and f"polling proxy the system's default → {first.host}:{first.port}" in detail
    )
    found, endpoint = host_settings(sandbox)
    assert found["ProxyHost"] == first.host and found["ProxyPort"] == str(first.port)
    assert found["UseDefaultProxy"] == "false"
    # The Tentacle reached Octopus' polling endpoint through this proxy, and only it.
    assert first.tunnels and set(first.tunnels) == {endpoint}
    assert not second.tunnels
    assert octopus_machines(octopus)[MACHINE]["HealthStatus"] == "Healthy"
    # A rerun with the same settings changes nothing, and status finds nothing to say.
    assert again.exit_code == EXIT_OK, again.table()
    assert steps(again)["configure"][0] == "unchanged"
    assert steps(again)["service"][0] == "unchanged"
    assert checked.exit_code == EXIT_OK, checked.table()


def test_a_proxy_that_does_not_answer_leaves_the_machine_unavailable(
    through_first, sandbox, settings
):
    closed = socket.create_server((net.Slot(sandbox.state()["slot"]).controller_address, 0))
    host, port = closed.getsockname()[:2]
    closed.close()  # nothing listens there now
    with polling_proxy(settings, host, port):
        report = register(ALL, quiet(), settings)
    (row,) = report.results
    assert report.exit_code == EXIT_FAILED
    assert (row.state, row.failed_step) == (State.FAILED, "health"), row
    assert "Unavailable" in row.reason
    assert host_settings(sandbox)[0]["ProxyPort"] == str(port)


def test_a_changed_proxy_is_drift_and_register_sets_it(
    through_first, proxies, sandbox, settings, octopus
):
    first, second = proxies
    with polling_proxy(settings, first.host, first.port):
        assert register(ALL, quiet(), settings).exit_code == EXIT_OK
    record_id = octopus_machines(octopus)[MACHINE]["Id"]
    with polling_proxy(settings, second.host, second.port):
        checked = inv(settings, "status", "--env", "sandbox", "--format", "json")
        assert checked.returncode == EXIT_FAILED, checked.stdout + checked.stderr
        (row,) = json.loads(checked.stdout)["machines"]
        assert (row["state"], row["failed_step"]) == ("failed", "drift")
        assert row["facts"]["drift"] == "polling proxy", row["reason"]
        wanted = f"{first.host}:{first.port} → {second.host}:{second.port}"
        assert (
            f"host {first.host}:{first.port}, inventory {second.host}:{second.port}"
            in (row["reason"])
        )
        planned = register(ALL, quiet(dry_run=True), settings)
        status_, detail = steps(planned)["configure"]
        assert status_ == "would change" and f"polling proxy {wanted}" in detail
        assert host_settings(sandbox)[0]["ProxyHost"] == first.host  # not yet
        updated = register(ALL, quiet(), settings)
        assert updated.exit_code == EXIT_OK, updated.table()
        status_, detail = steps(updated)["configure"]
        assert status_ == "changed" and f"polling proxy {wanted}" in detail
        found, endpoint = host_settings(sandbox)
        assert (found["ProxyHost"], found["ProxyPort"]) == (second.host, str(second.port))
        assert endpoint in second.tunnels
        record = octopus_machines(octopus)[MACHINE]
        assert (record["Id"], record["HealthStatus"]) == (record_id, "Healthy")  # in place
        assert status(ALL, quiet(), settings).exit_code == EXIT_OK
    # None in the inventory: the proxy is cleared, and the Tentacle polls directly.
    cleared = register(ALL, quiet(), settings)
    assert cleared.exit_code == EXIT_OK, cleared.table()
    assert f"polling proxy {second.host}:{second.port} → none" in steps(cleared)["configure"][1]
    found, _ = host_settings(sandbox)
    assert "ProxyHost" not in found and found["UseDefaultProxy"] == "false"
    assert octopus_machines(octopus)[MACHINE]["Id"] == record_id
    used = len(second.tunnels)
    assert status(ALL, quiet(), settings, health=True).exit_code == EXIT_OK
    assert len(second.tunnels) == used  # Healthy without it
