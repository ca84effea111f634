"""The stand-ins' polling and worker parts, run locally: the Tentacle stand-in's
`server-comms`, `show-configuration` and polling service (real subprocesses, real mutual TLS),
and the Octopus stand-in's polling endpoint, worker pools and worker routes (real HTTP)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from octoboot.sandbox.octopus_api.server import OctopusStandIn
from octoboot.sandbox.octopus_api.state import DYNAMIC_POOL, STATIC_POOL
from tests.sandbox import test_tentacle_standin_local as local
from tests.sandbox.test_octopus_api import assert_error_body, wait_for_task

API_KEY = "API-POLLINGSTANDINTEST00001"
SERVER = "AB" * 20
SUBSCRIPTION = re.compile(r"poll://[a-z0-9]{20}/")
QUEUE_SECONDS = 3.0

# The Tentacle stand-in's fixtures, as its own tests use them.
archive = local.archive
make_host = local.make_host
host = local.host


def trusted(h: local.Host) -> list[dict]:
    return json.loads(h.settings()["Tentacle.Communication.TrustedOctopusServers"])


# --- server-comms --------------------------------------------------------------------------


def test_server_comms_refuses_what_the_real_command_refuses(host: local.Host) -> None:
    local.create_default_instance(host)
    failures = {
        (): "Before server communications can be modified, trust must be established",
    }
    for args, message in failures.items():
        result = host.run("server-comms", "--style", "TentacleActive", "--host", "o", *args)
        assert result.returncode == 1 and message in result.stdout + result.stderr
    host.ok("configure", "--trust", SERVER, "--trust", "CD" * 20)
    failures = {
        ("--style", "TentacleActive", "--host", "o"): "More than one server is trusted",
        ("--thumbprint", SERVER): "Please specify a valid communications style",
        ("--thumbprint", SERVER, "--style", "Carrier"): "Please specify a valid communications",
        ("--thumbprint", "EF" * 20, "--style", "TentacleActive", "--host", "o"): (
            "No trusted server was found with the supplied thumbprint"
        ),
        ("--thumbprint", SERVER, "--style", "TentacleActive"): (
            "Please provide either the server hostname or websocket address"
        ),
        ("--thumbprint", SERVER, "--style", "TentacleActive", "--host", "o",
         "--web-socket", "wss://o/"): "The hostname and websocket options cannot be used together",
    }  # fmt: skip
    for args, message in failures.items():
        result = host.run("server-comms", *args)
        assert result.returncode == 1, (args, result.stdout)
        assert message in result.stdout + result.stderr, (args, result.stdout, result.stderr)


def test_server_comms_makes_one_subscription_and_keeps_it(host: local.Host) -> None:
    local.create_default_instance(host)
    host.ok("configure", "--noListen", "True", "--reset-trust", "--trust", SERVER)
    out = host.ok("server-comms", "--thumbprint", SERVER, "--style", "TentacleActive",
                  "--host", "Octopus.Example", "--port", "10943")  # fmt: skip
    assert "Updated server communications configuration" in out
    passive, active = trusted(host)
    assert (passive["CommunicationStyle"], passive["Address"]) == (1, None)
    assert active["CommunicationStyle"] == 2
    assert active["Address"] == "https://octopus.example:10943/"
    assert SUBSCRIPTION.fullmatch(active["SubscriptionId"])
    # again, or to another port: the same id, as the real command keeps it per server
    host.ok("server-comms", "--style", "TentacleActive", "--host", "octopus.example",
            "--thumbprint", SERVER, "--port", "10944")  # fmt: skip
    assert {s["SubscriptionId"] for s in trusted(host)[1:]} == {active["SubscriptionId"]}
    # show-configuration: what octoboot reads the id back from
    shown = json.loads(host.ok("show-configuration"))
    servers = shown["Tentacle"]["Communication"]["TrustedOctopusServers"]
    assert active["SubscriptionId"] in {s["SubscriptionId"] for s in servers}
    assert shown["Tentacle"]["Services"]["NoListen"] is True
    # --reset-trust forgets it: the next server-comms makes a new one
    host.ok("configure", "--reset-trust", "--trust", SERVER)
    host.ok("server-comms", "--thumbprint", SERVER, "--style", "TentacleActive", "--host", "o")
    assert trusted(host)[-1]["SubscriptionId"] != active["SubscriptionId"]


# --- a polling Tentacle and the Octopus polling endpoint -------------------------------------


@pytest.fixture
def octopus(tmp_path: Path) -> Iterator[Callable[[], OctopusStandIn]]:
    """Start (and restart) an Octopus stand-in on one state dir and one polling port."""
    running: list[OctopusStandIn] = []
    port = local.free_port()

    def start() -> OctopusStandIn:
        if running:
            running.pop().stop()
        server = OctopusStandIn(
            tmp_path / "octopus", API_KEY, ["Dev"],
            worker_pools=[("Linux workers", STATIC_POOL), ("Hosted Ubuntu", DYNAMIC_POOL)],
            polling_port=port, polling_queue_timeout=QUEUE_SECONDS,
        )  # fmt: skip
        server.start()
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop()


def client_of(server: OctopusStandIn) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"X-Octopus-ApiKey": API_KEY}, timeout=10)


def tentacle_log(host: local.Host) -> str:
    """What the Tentacle's service wrote to its log so far."""
    return "".join(p.read_text() for p in (host.config_root / "default" / "Logs").glob("*.txt"))


def polling_tentacle(host: local.Host, server: OctopusStandIn, tmp_path: Path) -> local.Identity:
    """docs/polling-and-workers.md, "The host side", on a local host: identity, configure,
    server-comms, service."""
    identity = local.Identity.mint(tmp_path / "pki", "Octopus Tentacle")
    local.create_default_instance(host)
    local.import_identity(host, identity)
    host.ok("configure", "--noListen", "True", "--reset-trust",
            "--trust", server.server_thumbprint)  # fmt: skip
    host.ok("server-comms", "--thumbprint", server.server_thumbprint, "--style", "TentacleActive",
            "--host", "127.0.0.1", "--port", str(server.polling_port))  # fmt: skip
    host.ok("service", "--install", "--start")
    return identity


def health(client: httpx.Client, record: dict[str, Any], collection: str = "machines") -> dict:
    body = {"Name": "Health", "Arguments": {"Timeout": "00:01:00", "MachineTimeout": "00:00:20",
                                            "MachineIds": [record["Id"]]}}  # fmt: skip
    task = wait_for_task(client, client.post("/api/Spaces-1/tasks", json=body).json()["Id"], 30)
    return {**client.get(f"/api/Spaces-1/{collection}/{record['Id']}").json(), "task": task}


def polling_body(name: str, thumbprint: str, subscription: str) -> dict[str, Any]:
    endpoint = {"CommunicationStyle": "TentacleActive", "Uri": subscription,
                "Thumbprint": thumbprint}  # fmt: skip
    return {"Name": name, "EnvironmentIds": ["Environments-1"], "Roles": ["web"],
            "Endpoint": endpoint}  # fmt: skip


def test_a_polling_tentacle_is_healthy_only_with_its_thumbprint_and_subscription(
    host: local.Host, octopus: Callable[[], OctopusStandIn], tmp_path: Path
) -> None:
    server = octopus()
    identity = polling_tentacle(host, server, tmp_path)
    subscription = trusted(host)[-1]["SubscriptionId"]
    with client_of(server) as client:
        record = client.post(
            "/api/machines", json=polling_body("web01", identity.thumbprint, subscription)
        ).json()
        assert record["Endpoint"]["CommunicationStyle"] == "TentacleActive"
        assert record["Uri"] == subscription
        checked = health(client, record)
        assert (checked["HealthStatus"], checked["task"]["State"]) == ("Healthy", "Success")

        # a record whose subscription no Tentacle polls with: the request is never collected
        other = client.put(
            record["Links"]["Self"],
            json={**record, "Endpoint": {**record["Endpoint"], "Uri": "poll://nobody/"}},
        ).json()
        started = time.monotonic()
        checked = health(client, other)
        assert checked["HealthStatus"] == "Unavailable"
        assert time.monotonic() - started >= QUEUE_SECONDS
        assert (
            "did not collect the request within the allowed time (00:00:03)"
            in (checked["StatusSummary"])
        )

        # the right subscription with another certificate: not this Tentacle either
        stranger = client.post(
            "/api/machines", json=polling_body("web02", "EF" * 20, subscription)
        ).json()
        assert health(client, stranger)["HealthStatus"] == "Unavailable"


def test_a_polling_tentacle_connects_again_after_octopus_restarts(
    host: local.Host, octopus: Callable[[], OctopusStandIn], tmp_path: Path
) -> None:
    server = octopus()
    identity = polling_tentacle(host, server, tmp_path)
    subscription = trusted(host)[-1]["SubscriptionId"]
    with client_of(server) as client:
        record = client.post(
            "/api/machines", json=polling_body("web01", identity.thumbprint, subscription)
        ).json()
        assert health(client, record)["HealthStatus"] == "Healthy"
    restarted = octopus()  # the same state and port, every connection gone
    with client_of(restarted) as client:
        assert health(client, record)["HealthStatus"] == "Healthy"
    assert "Polling 127.0.0.1" in tentacle_log(host)


def test_an_unknown_certificate_is_turned_away_by_the_polling_endpoint(
    host: local.Host, octopus: Callable[[], OctopusStandIn], tmp_path: Path
) -> None:
    server = octopus()
    polling_tentacle(host, server, tmp_path)  # no record has its thumbprint
    subscription = trusted(host)[-1]["SubscriptionId"]
    # The endpoint closes the connection before the Tentacle can name its subscription,
    # every time it tries: it is never polling.
    where = f"Polling 127.0.0.1:{server.polling_port}"
    local.wait_for(lambda: tentacle_log(host).count(f"{where} failed") >= 2, "two refused attempts")
    assert f"{where} as " not in tentacle_log(host)
    with client_of(server) as client:
        # a record with the subscription but another certificate, made after the Tentacle
        # was turned away: Octopus never let that connection in
        record = client.post(
            "/api/machines", json=polling_body("web01", "EF" * 20, subscription)
        ).json()
        assert health(client, record)["HealthStatus"] == "Unavailable"


def test_a_polling_tentacle_turns_away_a_server_it_does_not_trust(
    host: local.Host, octopus: Callable[[], OctopusStandIn], tmp_path: Path
) -> None:
    """The other half of mutual TLS: the Tentacle checks the server's thumbprint."""
    server = octopus()
    identity = local.Identity.mint(tmp_path / "pki", "Octopus Tentacle")
    local.create_default_instance(host)
    local.import_identity(host, identity)
    host.ok("configure", "--noListen", "True", "--reset-trust", "--trust", SERVER)
    host.ok("server-comms", "--thumbprint", SERVER, "--style", "TentacleActive",
            "--host", "127.0.0.1", "--port", str(server.polling_port))  # fmt: skip
    host.ok("service", "--install", "--start")
    subscription = trusted(host)[-1]["SubscriptionId"]
    with client_of(server) as client:
        record = client.post(
            "/api/machines", json=polling_body("web01", identity.thumbprint, subscription)
        ).json()
        local.wait_for(
            lambda: (
                f"the server presented thumbprint {server.server_thumbprint}, not trusted"
                in tentacle_log(host)
            ),
            "the Tentacle to refuse the server",
        )
        assert health(client, record)["HealthStatus"] == "Unavailable"


# --- worker pools and workers -----------------------------------------------------------


def worker_body(name: str, pools: list[str], **endpoint: str) -> dict[str, Any]:
    return {
        "Name": name,
        "WorkerPoolIds": pools,
        "Endpoint": {"CommunicationStyle": "TentaclePassive", "Uri": f"https://{name}:10933/",
                     "Thumbprint": "CD" * 20, **endpoint},
    }  # fmt: skip


def test_worker_pools_have_the_real_shapes(octopus: Callable[[], OctopusStandIn]) -> None:
    with client_of(octopus()) as client:
        root = client.get("/api").json()
        assert "{?name,skip,ids,take,partialName}" in root["Links"]["WorkerPools"]
        assert "workerpoolIds" in root["Links"]["Workers"]
        pools = {p["Name"]: p for p in client.get("/api/Spaces-1/workerpools/all").json()}
        assert set(pools) == {"Default Worker Pool", "Linux workers", "Hosted Ubuntu"}
        assert pools["Default Worker Pool"]["IsDefault"] is True
        linux, hosted = pools["Linux workers"], pools["Hosted Ubuntu"]
        assert (linux["WorkerPoolType"], linux["CanAddWorkers"]) == ("StaticWorkerPool", True)
        assert (hosted["WorkerPoolType"], hosted["CanAddWorkers"]) == ("DynamicWorkerPool", False)
        assert linux["Slug"] == "linux-workers" and linux["Links"]["Self"].endswith(linux["Id"])
        page = client.get("/api/Spaces-1/workerpools", params={"name": "linux workers"}).json()
        assert page["ItemType"] == "WorkerPool" and [p["Id"] for p in page["Items"]] == [
            linux["Id"]
        ]


def test_workers_have_the_real_routes_paging_and_errors(
    octopus: Callable[[], OctopusStandIn],
) -> None:
    with client_of(octopus()) as client:
        pools = {p["Name"]: p["Id"] for p in client.get("/api/workerpools/all").json()}
        linux = pools["Linux workers"]
        created = client.post("/api/Spaces-1/workers", json=worker_body("b1", [linux]))
        assert created.status_code == 201, created.text
        worker = created.json()
        assert worker["Id"].startswith("Workers-") and worker["WorkerPoolIds"] == [linux]
        assert "EnvironmentIds" not in worker and "Roles" not in worker
        assert worker["HealthStatus"] == "Unknown" and worker["Links"]["Self"].endswith(
            worker["Id"]
        )
        client.post("/api/workers", json=worker_body("b2", [linux], Thumbprint="EF" * 20))
        page = client.get("/api/workers", params={"take": 1}).json()
        assert (page["ItemType"], page["TotalResults"], len(page["Items"])) == ("Worker", 2, 1)
        assert "Page.Next" in page["Links"]
        by_thumbprint = client.get("/api/workers/all", params={"thumbprint": "ef" * 20}).json()
        assert [w["Name"] for w in by_thumbprint] == ["b2"]
        in_pool = client.get(f"/api/workerpools/{linux}/workers").json()
        assert {w["Name"] for w in in_pool["Items"]} == {"b1", "b2"}
        assert client.get("/api/machines/all").json() == []  # targets are another collection

        # a dynamic pool takes no workers: the server's answer (OctopusTentacle#331)
        body = assert_error_body(
            client.post("/api/workers", json=worker_body("b3", [pools["Hosted Ubuntu"]])), 400
        )
        assert body["ErrorMessage"] == "There was a problem with your request."
        assert body["Errors"] == [
            "Worker Pools 'Hosted Ubuntu' do not support adding workers directly"
        ]
        errors = assert_error_body(client.post("/api/workers", json=worker_body("b3", [])), 400)
        assert "Please select at least one worker pool for this worker." in errors["Errors"]
        errors = assert_error_body(
            client.post("/api/workers", json=worker_body("b3", ["WorkerPools-99"])), 400
        )
        assert "The worker pool 'WorkerPools-99' does not exist." in errors["Errors"]
        assert_error_body(client.post("/api/workers", json=worker_body("B1", [linux])), 400)
        bad_polling = worker_body("b3", [linux], CommunicationStyle="TentacleActive")
        assert_error_body(client.post("/api/workers", json=bad_polling), 400)
        assert_error_body(client.get("/api/workers/Workers-99"), 404)

        # updated and deleted in place
        moved = client.put(worker["Links"]["Self"], json={**worker, "WorkerPoolIds": [
            pools["Default Worker Pool"]]})  # fmt: skip
        assert moved.status_code == 200 and moved.json()["Id"] == worker["Id"]
        assert client.delete(worker["Links"]["Self"]).status_code == 200
        assert [w["Name"] for w in client.get("/api/workers/all").json()] == ["b2"]
