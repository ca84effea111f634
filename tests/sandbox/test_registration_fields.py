"""Every registration field of the inventory, on the sandbox over real SSH and HTTP: set it,
see it in Octopus through the API, change it in the inventory, see `status` call it drift and
`register` update the record in place (same Id); a name Octopus does not have stops the run
before any machine is touched."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from octoboot.bootstrap import bootstrap, register
from octoboot.errors import ConfigError
from octoboot.report import EXIT_FAILED, EXIT_OK, State
from octoboot.run import Selection
from octoboot.sandbox import net
from octoboot.status import status
from tests.sandbox.connect_proxy import ConnectProxy
from tests.sandbox.project import by_name, inv, octopus_machines, quiet, request_count

ALL = Selection(env="sandbox")
S = "/api/Spaces-1"


@pytest.fixture(scope="module")
def sandbox(sandbox_factory):
    return sandbox_factory(2, install_seconds=0.5)


@pytest.fixture(scope="module")
def bootstrapped(sandbox, settings):
    report = bootstrap(ALL, quiet(), settings)
    assert report.exit_code == EXIT_OK, report.table()
    return report


def create(octopus: httpx.Client, route: str, body: dict[str, Any]) -> dict[str, Any]:
    response = octopus.post(f"{S}/{route}", json=body)
    assert response.status_code == 201, response.text
    return response.json()


@contextmanager
def inventory(settings, **keys: Any) -> Iterator[None]:
    """machines/sandbox.toml with these keys at its top, for the block."""
    path = settings.machines_dir / "sandbox.toml"
    original = path.read_text()
    lines = "".join(f"{key} = {json.dumps(value)}\n" for key, value in keys.items())
    path.write_text(original.replace('roles = ["web"]\n', f'roles = ["web"]\n{lines}', 1))
    try:
        yield
    finally:
        path.write_text(original)


def round_trip(
    settings,
    octopus: httpx.Client,
    *,
    first: dict[str, Any],
    second: dict[str, Any],
    field: Callable[[dict[str, Any]], Any],
    first_value: Any,
    second_value: Any,
    drift: str,
) -> None:
    """Register with the `first` keys, see `first_value` in each record; change them to
    `second`: `inv status` calls it drift, a dry run would update, register updates in
    place."""
    before = octopus_machines(octopus)
    with inventory(settings, **first):
        report = register(ALL, quiet(), settings)
        assert report.exit_code == EXIT_OK, report.table()
        records = octopus_machines(octopus)
        for name in ("sbx01", "sbx02"):
            assert field(records[name]) == first_value, records[name]
            assert records[name]["Id"] == before[name]["Id"]
        assert status(ALL, quiet(), settings).exit_code == EXIT_OK
    with inventory(settings, **second):
        checked = inv(settings, "status", "--env", "sandbox", "--format", "json")
        assert checked.returncode == EXIT_FAILED, checked.stdout + checked.stderr
        for row in json.loads(checked.stdout)["machines"]:
            assert (row["state"], row["failed_step"]) == ("failed", "drift")
            assert row["facts"]["drift"] == drift, row["reason"]
        planned = register(ALL, quiet(dry_run=True), settings)
        plan = {s.name: s for s in by_name(planned)["sbx01"].steps}["register"]
        assert (plan.status, plan.detail) == (
            "would change",
            f"would update {before['sbx01']['Id']}: {drift}",
        )
        assert field(octopus_machines(octopus)["sbx01"]) == first_value  # not yet
        updated = register(ALL, quiet(), settings)
        assert updated.exit_code == EXIT_OK, updated.table()
        step = {s.name: s for s in by_name(updated)["sbx01"].steps}["register"]
        expected = ("changed", f"updated {before['sbx01']['Id']}: {drift}")
        assert (step.status, step.detail) == expected
        records = octopus_machines(octopus)
        for name in ("sbx01", "sbx02"):
            assert field(records[name]) == second_value
            assert records[name]["Id"] == before[name]["Id"]  # in place
        assert len(records) == len(before)
        assert status(ALL, quiet(), settings).exit_code == EXIT_OK
        again = register(ALL, quiet(), settings)
        steps = {s.name: s.status for s in by_name(again)["sbx01"].steps}
        assert steps["register"] == "unchanged"  # re-running does not toggle anything


def refused_before_any_machine(sandbox, settings, expected: str, **keys: Any) -> None:
    """With these keys, `inv register` is one line naming what Octopus lacks, exit 2, and
    neither a host nor Octopus was changed."""
    calls = {h.name: len(h.tentacle_calls()) for h in sandbox.hosts()}
    offset = request_count(sandbox)
    with inventory(settings, **keys):
        proc = inv(settings, "register", "--env", "sandbox")
        with pytest.raises(ConfigError):
            status(ALL, quiet(), settings)
    assert proc.returncode == ConfigError.exit_code, proc.stdout + proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"octoboot: {settings.machines_dir / 'sandbox.toml'}: Octopus at ")
    assert expected in line and "Traceback" not in proc.stderr
    assert {h.name: len(h.tentacle_calls()) for h in sandbox.hosts()} == calls
    requests = (sandbox.root / "octopus" / "requests.jsonl").read_text().splitlines()[offset:]
    assert all(json.loads(r)["method"] == "GET" for r in requests)


def test_machine_policy(bootstrapped, sandbox, settings, octopus):
    cleanup = {"DeleteMachinesBehavior": "DeleteUnavailableMachines",
               "DeleteMachinesElapsedTimeSpan": "00:20:00"}  # fmt: skip
    cattle = create(octopus, "machinepolicies", {"Name": "Linux cattle",
                                                 "MachineCleanupPolicy": cleanup})  # fmt: skip
    pets = create(octopus, "machinepolicies", {"Name": "Linux pets"})
    default = octopus_machines(octopus)["sbx01"]["MachinePolicyId"]
    assert default == "MachinePolicies-1"
    round_trip(
        settings,
        octopus,
        first={"machine_policy": "Linux cattle"},
        second={"machine_policy": pets["Id"]},  # by Id this time
        field=lambda record: record["MachinePolicyId"],
        first_value=cattle["Id"],
        second_value=pets["Id"],
        drift="machine policy",
    )
    # Without the key, the wanted policy is the server's default again.
    assert status(ALL, quiet(), settings).results[0].facts["drift"] == "machine policy"
    assert register(ALL, quiet(), settings).exit_code == EXIT_OK
    assert octopus_machines(octopus)["sbx01"]["MachinePolicyId"] == default
    refused_before_any_machine(
        sandbox, settings, 'has no machine policy "Windows pets"', machine_policy="Windows pets"
    )


@pytest.fixture(scope="module")
def tenancy(octopus):
    """Two tenants and a tag set scoped to tenants, as an Octopus administrator makes them."""
    create(octopus, "tagsets", {"Name": "Region", "Tags": [{"Name": "EU"}, {"Name": "US"}]})
    acme = create(octopus, "tenants", {"Name": "Acme Corp"})
    globex = create(octopus, "tenants", {"Name": "Globex"})
    return acme, globex


def test_tenants(bootstrapped, tenancy, sandbox, settings, octopus):
    acme, globex = tenancy
    round_trip(
        settings,
        octopus,
        first={"tenants": ["Acme Corp"]},
        second={"tenants": ["acme-corp", globex["Id"]]},  # by slug and by Id
        field=lambda record: sorted(record["TenantIds"]),
        first_value=[acme["Id"]],
        second_value=sorted([acme["Id"], globex["Id"]]),
        drift="tenants",
    )
    participation = octopus_machines(octopus)["sbx01"]["TenantedDeploymentParticipation"]
    assert participation == "Tenanted"  # tenants and nothing said: Tenanted
    refused_before_any_machine(sandbox, settings, 'has no tenant "Initech"', tenants=["Initech"])


def test_tenant_tags(bootstrapped, tenancy, sandbox, settings, octopus):
    round_trip(
        settings,
        octopus,
        first={"tenant_tags": ["Region/EU"]},
        second={"tenant_tags": ["region/us"]},  # sent as the tag set spells it
        field=lambda record: record["TenantTags"],
        first_value=["Region/EU"],
        second_value=["Region/US"],
        drift="tenant tags",
    )
    refused_before_any_machine(
        sandbox, settings, 'has no tenant tag "Region/Mars"', tenant_tags=["Region/Mars"]
    )


def test_tenanted(bootstrapped, tenancy, settings, octopus):
    round_trip(
        settings,
        octopus,
        first={"tenants": ["Acme Corp"], "tenanted": "TenantedOrUntenanted"},
        second={"tenants": ["Acme Corp"], "tenanted": "Tenanted"},
        field=lambda record: record["TenantedDeploymentParticipation"],
        first_value="TenantedOrUntenanted",
        second_value="Tenanted",
        drift="tenanted",
    )
    # Without the keys the record goes back to Octopus' defaults: no tenants, Untenanted.
    assert register(ALL, quiet(), settings).exit_code == EXIT_OK
    record = octopus_machines(octopus)["sbx01"]
    assert (record["TenantIds"], record["TenantTags"]) == ([], [])
    assert record["TenantedDeploymentParticipation"] == "Untenanted"


@pytest.fixture(scope="module")
def proxies(sandbox):
    """Two HTTP CONNECT proxies on the controller's side of the sandbox's bridge, which the
    Octopus stand-in reaches, as an Octopus-side proxy in a DMZ."""
    address = net.Slot(sandbox.state()["slot"]).controller_address
    with ConnectProxy(address) as first, ConnectProxy(address) as second:
        yield first, second


def test_proxy_of_a_listening_machine(bootstrapped, proxies, sandbox, settings, octopus):
    first, second = proxies
    dmz = create(octopus, "proxies", {"Name": "DMZ proxy", "Host": first.host, "Port": first.port})
    backup = create(
        octopus, "proxies", {"Name": "Backup proxy", "Host": second.host, "Port": second.port}
    )
    tentacles = {f"{h.address}:10933" for h in sandbox.hosts()}
    round_trip(
        settings,
        octopus,
        first={"proxy": "DMZ proxy"},
        second={"proxy": backup["Id"]},
        field=lambda record: record["Endpoint"]["ProxyId"],
        first_value=dmz["Id"],
        second_value=backup["Id"],
        drift="proxy",
    )
    # Octopus' health checks went through each proxy in turn: the field is honoured.
    assert tentacles <= set(first.tunnels) and tentacles <= set(second.tunnels)
    # A proxy that does not answer makes the machines Unavailable, as on a real server.
    create(octopus, "proxies", {"Name": "Dead proxy", "Host": first.host, "Port": 1})
    with inventory(settings, proxy="Dead proxy"):
        report = register(ALL, quiet(), settings)
    assert {(r.state, r.failed_step) for r in report.results} == {(State.FAILED, "health")}
    assert "Unavailable" in report.results[0].reason
    assert register(ALL, quiet(), settings).exit_code == EXIT_OK  # direct again
    assert octopus_machines(octopus)["sbx01"]["Endpoint"]["ProxyId"] is None
    refused_before_any_machine(sandbox, settings, 'has no proxy "Squid"', proxy="Squid")


def test_a_polling_proxy_is_refused_for_a_listening_machine(bootstrapped, sandbox, settings):
    path = settings.machines_dir / "sandbox.toml"
    original = path.read_text()
    calls = {h.name: len(h.tentacle_calls()) for h in sandbox.hosts()}
    path.write_text(original + 'polling_proxy = { host = "proxy.corp", port = 3128 }\n')
    try:
        proc = inv(settings, "register", "--env", "sandbox")
        with_password = original + (
            'polling_proxy = { host = "proxy.corp", password = "hunter2" }\n'
        )
        path.write_text(with_password)
        secret = inv(settings, "status", "--env", "sandbox")
    finally:
        path.write_text(original)
    assert proc.returncode == ConfigError.exit_code
    assert proc.stderr.strip() == (
        f"octoboot: {path}: machine 'sbx02': polling_proxy is the proxy a polling Tentacle "
        "reaches Octopus through; this machine listens, so Octopus reaches it, through the "
        "Octopus proxy that `proxy` names if any"
    )
    assert secret.returncode == ConfigError.exit_code
    assert "password: refused: the Tentacle takes a proxy password only on its command line" in (
        secret.stderr
    )
    assert "hunter2" not in secret.stderr + secret.stdout
    assert {h.name: len(h.tentacle_calls()) for h in sandbox.hosts()} == calls


def test_each_list_is_read_once_per_run_and_only_when_named(
    bootstrapped, tenancy, sandbox, settings
):
    def reads(**keys: Any) -> Counter[str]:
        offset = request_count(sandbox)
        with inventory(settings, **keys):
            report = register(ALL, quiet(), settings)
        assert report.exit_code == EXIT_OK, report.table()
        lines = (sandbox.root / "octopus" / "requests.jsonl").read_text().splitlines()[offset:]
        paths = [json.loads(line)["path"].split("?")[0] for line in lines]
        return Counter(p.rsplit("/", 2)[-2] for p in paths if p.endswith("/all"))

    plain = reads()
    assert plain["machinepolicies"] == 1
    assert not {"tenants", "tagsets", "proxies"} & set(plain)
    named = reads(tenants=["Acme Corp"], tenant_tags=["Region/EU"])
    assert (named["machinepolicies"], named["tenants"], named["tagsets"]) == (1, 1, 1)
    assert register(ALL, quiet(), settings).exit_code == EXIT_OK  # back to untenanted
