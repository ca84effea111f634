"""The Octopus API stand-in, over real HTTP (and real TLS for health checks) on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import json
import os
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from octoboot import certificates
from octoboot.sandbox.octopus_api.server import OctopusStandIn
from tests.sandbox.project import FAST

REPO = Path(__file__).resolve().parents[2]
API_KEY = "API-TESTKEY0123456789ABCDEF"
OTHER_THUMBPRINT = "0123456789ABCDEF0123456789ABCDEF01234567"


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "octopus"


@pytest.fixture
def standin(state_dir: Path) -> Iterator[OctopusStandIn]:
    with OctopusStandIn(state_dir, API_KEY, ["Dev", "Prod"], settings=FAST) as server:
        yield server


@pytest.fixture
def client(standin: OctopusStandIn) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=standin.url, headers={"X-Octopus-ApiKey": API_KEY}, timeout=10
    ) as http:
        yield http


def machine_body(name: str, thumbprint: str = OTHER_THUMBPRINT, **fields: Any) -> dict[str, Any]:
    return {
        "Name": name,
        "EnvironmentIds": ["Environments-1"],
        "Roles": ["web"],
        "Endpoint": {
            "CommunicationStyle": "TentaclePassive",
            "Uri": f"https://{name}:10933/",
            "Thumbprint": thumbprint,
        },
        **fields,
    }


def create_machine(client: httpx.Client, name: str, **kwargs: Any) -> dict[str, Any]:
    response = client.post("/api/Spaces-1/machines", json=machine_body(name, **kwargs))
    assert response.status_code == 201, response.text
    return response.json()


def wait_for_task(client: httpx.Client, task_id: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        task = client.get(f"/api/tasks/{task_id}").json()
        if task["IsCompleted"]:
            return task
        assert time.monotonic() < deadline, f"task not done in time: {task}"
        time.sleep(0.05)


def assert_error_body(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {
        "ErrorMessage",
        "Errors",
        "FullException",
        "HelpText",
        "HelpLink",
        "Details",
        "ParsedHelpLinks",
    }
    assert body["ErrorMessage"]
    return body


# -- auth, root, spaces, users, server certificate --


def test_missing_or_wrong_key_is_401_by_header_and_query(standin: OctopusStandIn) -> None:
    with httpx.Client(base_url=standin.url, timeout=10) as anonymous:
        assert_error_body(anonymous.get("/api"), 401)
        assert_error_body(anonymous.get("/api", headers={"X-Octopus-ApiKey": "API-WRONG"}), 401)
        assert_error_body(anonymous.get("/api/machines", params={"apikey": "API-WRONG"}), 401)
        assert anonymous.get("/api/machines", params={"apikey": API_KEY}).status_code == 200
        assert anonymous.get("/api", headers={"X-Octopus-ApiKey": API_KEY}).status_code == 200


def test_root_document_points_at_the_default_space(client: httpx.Client) -> None:
    root = client.get("/api").json()
    assert root["Application"] == "Octopus Deploy"
    assert root["ApiVersion"] == "3.0.0"
    assert root["Version"].split(".")[0] == "2025"
    assert root["InstallationId"]
    links = root["Links"]
    assert links["Machines"].startswith("/api/Spaces-1/machines{/id}{?")
    assert "thumbprint" in links["Machines"]
    assert links["Environments"].startswith("/api/Spaces-1/environments{/id}")
    assert links["Tasks"].startswith("/api/tasks{/id}")
    assert links["CurrentUser"] == "/api/users/me"
    assert links["SpaceHome"] == "/api/{spaceId}"
    assert links["CertificateConfiguration"].startswith("/api/configuration/certificates{/id}")
    assert links["Spaces"].startswith("/api/spaces{/id}")
    assert links["Certificates"].startswith("/api/certificates{/id}")


def test_spaces_and_the_current_users_spaces(client: httpx.Client) -> None:
    page = client.get("/api/spaces").json()
    assert page["ItemType"] == "Space" and page["TotalResults"] == 1
    space = page["Items"][0]
    assert (space["Id"], space["Name"], space["IsDefault"]) == ("Spaces-1", "Default", True)
    assert [s["Id"] for s in client.get("/api/spaces/all").json()] == ["Spaces-1"]
    assert client.get("/api/spaces/Spaces-1").json()["Name"] == "Default"
    assert_error_body(client.get("/api/spaces/Spaces-7"), 404)

    me = client.get("/api/users/me").json()
    mine = client.get(me["Links"]["Spaces"]).json()
    assert [(s["Id"], s["IsDefault"]) for s in mine] == [("Spaces-1", True)]


def test_server_certificate_on_both_routes(client: httpx.Client, standin: OctopusStandIn) -> None:
    for path in (
        "/api/configuration/certificates/certificate-global",
        "/api/certificates/certificate-global",
    ):
        cert = client.get(path).json()
        assert cert["Id"] == "certificate-global"
        assert cert["Name"] == "Octopus Portal"
        assert cert["SignatureAlgorithm"] == "sha256RSA"
        assert cert["Thumbprint"] == standin.server_thumbprint
    assert len(standin.server_thumbprint) == 40


# -- environments --


def test_environments_seeded_found_by_name_and_created(client: httpx.Client) -> None:
    found = client.get("/api/Spaces-1/environments", params={"name": "dev"}).json()
    assert [e["Name"] for e in found["Items"]] == ["Dev"]
    env = found["Items"][0]
    assert env["Id"] == "Environments-1" and env["SpaceId"] == "Spaces-1"
    assert env["Links"]["Self"] == "/api/Spaces-1/environments/Environments-1"
    for name in ("Slug", "Description", "SortOrder", "UseGuidedFailure", "EnvironmentTags"):
        assert name in env
    assert [e["Name"] for e in client.get("/api/Spaces-1/environments/all").json()] == [
        "Dev",
        "Prod",
    ]
    assert client.get("/api/environments", params={"partialName": "ro"}).json()["TotalResults"] == 1

    created = client.post("/api/Spaces-1/environments", json={"Name": "QA"})
    assert created.status_code == 201
    qa = created.json()
    assert client.get(qa["Links"]["Self"]).json()["Name"] == "QA"
    duplicate = assert_error_body(client.post("/api/environments", json={"Name": "qa"}), 400)
    assert duplicate["Errors"]


# -- machines --


def test_machine_create_get_update_delete(client: httpx.Client) -> None:
    created = create_machine(client, "web01")
    machine_id = created["Id"]
    assert machine_id == "Machines-1"
    assert created["Thumbprint"] == OTHER_THUMBPRINT
    assert created["Uri"] == "https://web01:10933/"
    assert (created["HealthStatus"], created["Status"]) == ("Unknown", "Unknown")
    assert created["MachinePolicyId"] == "MachinePolicies-1"
    assert created["TenantedDeploymentParticipation"] == "Untenanted"
    assert created["Links"]["Self"] == f"/api/Spaces-1/machines/{machine_id}"
    assert {"Connection", "TasksTemplate"} <= set(created["Links"])
    assert client.get(created["Links"]["Self"]).json()["Name"] == "web01"

    changed = {
        **created,
        "Name": "web01-renamed",
        "Roles": ["api"],
        "HealthStatus": "Healthy",
        "Endpoint": {**created["Endpoint"], "Thumbprint": "AB" * 20},
    }
    updated = client.put(created["Links"]["Self"], json=changed)
    assert updated.status_code == 200
    machine = client.get(f"/api/Spaces-1/machines/{machine_id}").json()
    assert machine["Id"] == machine_id
    assert (machine["Name"], machine["Roles"]) == ("web01-renamed", ["api"])
    assert machine["Thumbprint"] == "AB" * 20
    assert machine["HealthStatus"] == "Unknown"  # server-set, not writeable
    assert machine["LastModifiedOn"] >= created["LastModifiedOn"]

    assert client.delete(created["Links"]["Self"]).status_code == 200
    assert_error_body(client.get(created["Links"]["Self"]), 404)


def test_names_are_unique_but_thumbprints_may_repeat(client: httpx.Client) -> None:
    first = create_machine(client, "web01")
    duplicate = client.post("/api/Spaces-1/machines", json=machine_body(" WEB01 "))
    body = assert_error_body(duplicate, 400)
    assert "A machine named" in body["ErrorMessage"] and "already exists" in body["ErrorMessage"]
    assert body["Errors"]

    second = create_machine(client, "web02")  # same thumbprint as web01
    assert second["Thumbprint"] == first["Thumbprint"]
    renamed_onto_first = client.put(second["Links"]["Self"], json={**second, "Name": "Web01"})
    assert_error_body(renamed_onto_first, 400)
    assert len(client.get("/api/machines/all").json()) == 2


def test_machine_validation(client: httpx.Client) -> None:
    no_thumb = machine_body("web01")
    del no_thumb["Endpoint"]["Thumbprint"]
    body = assert_error_body(client.post("/api/machines", json=no_thumb), 400)
    assert "Please provide a thumbprint for this machine." in body["Errors"]

    unknown_env = machine_body("web01", EnvironmentIds=["Environments-99"])
    body = assert_error_body(client.post("/api/machines", json=unknown_env), 400)
    assert any("Environments-99" in error for error in body["Errors"])

    assert_error_body(client.post("/api/machines", json=machine_body("")), 400)
    bad_json = client.post(
        "/api/machines", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert_error_body(bad_json, 400)
    assert client.get("/api/machines/all").json() == []


def test_machine_filters(client: httpx.Client) -> None:
    create_machine(client, "web01", thumbprint="AA" * 20)
    create_machine(client, "web02", thumbprint="BB" * 20)
    create_machine(client, "db01", thumbprint="aa" * 20, EnvironmentIds=["Environments-2"])

    def names(path: str, **params: str) -> list[str]:
        result = client.get(path, params=params).json()
        items = result["Items"] if isinstance(result, dict) else result
        return sorted(m["Name"] for m in items)

    assert names("/api/Spaces-1/machines", name=" WEB01 ") == ["web01"]
    assert names("/api/Spaces-1/machines", name="web") == []
    assert names("/api/Spaces-1/machines", partialName="EB") == ["web01", "web02"]
    assert names("/api/Spaces-1/machines/all", thumbprint="aa" * 20) == ["db01", "web01"]
    assert names("/api/Spaces-1/machines", environmentIds="Environments-2") == ["db01"]
    both = names("/api/Spaces-1/machines", environmentIds="Environments-1,Environments-2")
    assert both == ["db01", "web01", "web02"]
    assert names("/api/Spaces-1/machines", ids="Machines-2") == ["web02"]
    assert names("/api/Spaces-1/environments/Environments-1/machines") == ["web01", "web02"]


def test_paging_follows_page_next(client: httpx.Client) -> None:
    for n in range(35):
        create_machine(client, f"host{n:02d}")

    first = client.get("/api/Spaces-1/machines", params={"partialName": "host"}).json()
    assert first["ItemType"] == "DeploymentTarget"
    assert (first["TotalResults"], first["ItemsPerPage"], len(first["Items"])) == (35, 30, 30)
    assert (first["NumberOfPages"], first["LastPageNumber"]) == (2, 1)
    assert first["IsStale"] is False
    assert {"Self", "Template", "Page.All", "Page.Current", "Page.Last", "Page.0", "Page.1"} <= set(
        first["Links"]
    )
    assert "partialName=host" in first["Links"]["Page.Next"]

    seen, page = [], first
    while True:
        seen += [m["Name"] for m in page["Items"]]
        if "Page.Next" not in page["Links"]:
            break
        page = client.get(page["Links"]["Page.Next"]).json()
    assert len(page["Items"]) == 5
    assert sorted(seen) == [f"host{n:02d}" for n in range(35)]

    small = client.get("/api/machines", params={"skip": 30, "take": 10}).json()
    assert [m["Name"] for m in small["Items"]] == ["host30", "host31", "host32", "host33", "host34"]
    assert "Page.Next" not in small["Links"]


def test_legacy_unscoped_routes_and_unknown_space(client: httpx.Client) -> None:
    created = client.post("/api/machines", json=machine_body("web01"))
    assert created.status_code == 201
    machine_id = created.json()["Id"]
    assert client.get(f"/api/machines/{machine_id}").json()["Name"] == "web01"
    assert client.get(f"/api/Spaces-1/machines/{machine_id}").json()["Name"] == "web01"
    assert client.get("/api/environments/all").status_code == 200
    assert_error_body(client.get("/api/Spaces-9/machines"), 404)


def test_unknown_route_is_404_with_error_body(client: httpx.Client) -> None:
    body = assert_error_body(client.get("/api/Spaces-1/nothing-here"), 404)
    assert body["Errors"] == [] and body["ParsedHelpLinks"] == []
    assert_error_body(client.get("/api/machines/Machines-404"), 404)


def test_many_concurrent_clients(standin: OctopusStandIn) -> None:
    def register(n: int) -> int:
        with httpx.Client(base_url=standin.url, headers={"X-Octopus-ApiKey": API_KEY}) as http:
            response = http.post("/api/machines", json=machine_body(f"node{n:03d}"), timeout=30)
            return response.status_code

    with ThreadPoolExecutor(max_workers=120) as pool:
        statuses = list(pool.map(register, range(120)))
    assert statuses == [201] * 120
    with httpx.Client(base_url=standin.url, headers={"X-Octopus-ApiKey": API_KEY}) as http:
        machines = http.get("/api/machines/all").json()
    assert len({m["Id"] for m in machines}) == 120


# -- persistence and the request log --


def test_state_and_thumbprint_survive_a_restart(state_dir: Path) -> None:
    with OctopusStandIn(state_dir, API_KEY, ["Dev"]) as first:
        with httpx.Client(base_url=first.url, headers={"X-Octopus-ApiKey": API_KEY}) as http:
            created = create_machine(http, "web01")
        thumbprint = first.server_thumbprint
    assert (state_dir / "server-key.pem").stat().st_mode & 0o777 == 0o600

    with OctopusStandIn(state_dir, API_KEY, ["Dev", "Prod"]) as second:
        assert second.server_thumbprint == thumbprint
        with httpx.Client(base_url=second.url, headers={"X-Octopus-ApiKey": API_KEY}) as http:
            assert http.get("/api/machines/all").json() == [created]
            envs = [e["Name"] for e in http.get("/api/environments/all").json()]
            assert envs == ["Dev", "Prod"]
            assert create_machine(http, "web02")["Id"] == "Machines-2"


def test_requests_log_counts_calls_without_the_key(
    client: httpx.Client, standin: OctopusStandIn, state_dir: Path
) -> None:
    client.get("/api")
    client.get("/api/machines", params={"apikey": API_KEY})
    client.post("/api/machines", json=machine_body("web01"))
    lines = (state_dir / "requests.jsonl").read_text().splitlines()
    assert API_KEY not in "".join(lines)
    entries = [json.loads(line) for line in lines]
    assert [(e["method"], e["status"]) for e in entries] == [
        ("GET", 200),
        ("GET", 200),
        ("POST", 201),
    ]
    assert entries[1]["path"].startswith("/api/machines?apikey=")
    assert all(set(e) == {"time", "method", "path", "status"} for e in entries)


def test_main_serves_until_terminated(tmp_path: Path) -> None:
    env = {**os.environ, "OCTOPUS_STANDIN_API_KEY": API_KEY, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "octoboot.sandbox.octopus_api", "--state", str(tmp_path)]
    command += ["--listen", "127.0.0.1:0", "--environment", "Dev"]
    proc = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "no 'listening on' line within 20 s"
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.removeprefix("listening on ")
        envs = httpx.get(f"{url}/api/environments/all", headers={"X-Octopus-ApiKey": API_KEY})
        assert [e["Name"] for e in envs.json()] == ["Dev"]
        proc.terminate()
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- health tasks against a TLS listener shaped like a Tentacle --


class _TentacleHandler(BaseHTTPRequestHandler):
    server: _TentacleServer

    def do_GET(self) -> None:
        der = self.connection.getpeercert(binary_form=True)  # type: ignore[attr-defined]
        client = certificates.thumbprint_of_der(der) if der else "(none)"
        if client == self.server.trusted:
            status = 200
            body = json.dumps({"Application": "Octopus Tentacle", "Version": "8.0.0"})
        else:
            status = 403
            body = f"This Tentacle does not trust the Octopus Server with thumbprint {client}.\n"
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _TentacleServer(ThreadingHTTPServer):
    daemon_threads = True
    trusted = ""


@pytest.fixture(scope="module")
def tentacle_identity(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    key, cert = certificates.new_self_signed()
    key_pem, cert_pem = certificates.to_pem(key, cert)
    folder = tmp_path_factory.mktemp("tentacle")
    (folder / "key.pem").write_bytes(key_pem)
    (folder / "cert.pem").write_bytes(cert_pem)
    return folder / "key.pem", folder / "cert.pem", certificates.thumbprint(cert)


@pytest.fixture
def start_tentacle(
    tentacle_identity: tuple[Path, Path, str], state_dir: Path, standin: OctopusStandIn
) -> Iterator[Callable[[str], int]]:
    """Starts a TLS listener trusting the given server thumbprint; returns its port."""
    key_path, cert_path, _ = tentacle_identity
    servers: list[_TentacleServer] = []

    def start(trusted: str) -> int:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)
        # Python cannot ask for a client cert without verifying it, so the stand-in's
        # self-signed cert is made acceptable; trust itself is the thumbprint check above.
        context.verify_mode = ssl.CERT_OPTIONAL
        context.load_verify_locations(cadata=(state_dir / "server-cert.pem").read_text())
        server = _TentacleServer(("127.0.0.1", 0), _TentacleHandler)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        server.trusted = trusted
        threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True).start()
        servers.append(server)
        return server.server_address[1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def start_health(client: httpx.Client, **arguments: Any) -> dict[str, Any]:
    body = {
        "Name": "Health",
        "Description": "test",
        "SpaceId": "Spaces-1",
        "Arguments": {"Timeout": "00:01:00", "MachineTimeout": "00:00:05", **arguments},
    }
    response = client.post("/api/Spaces-1/tasks", json=body)
    assert response.status_code == 201, response.text
    task = response.json()
    assert task["Id"].startswith("ServerTasks-")
    assert task["State"] in {"Queued", "Executing"}
    return task


def listening_machine(client: httpx.Client, name: str, port: int, thumbprint: str) -> str:
    body = machine_body(name, thumbprint)
    body["Endpoint"]["Uri"] = f"https://127.0.0.1:{port}/"
    response = client.post("/api/machines", json=body)
    assert response.status_code == 201, response.text
    return response.json()["Id"]


def test_health_check_of_a_trusting_tentacle_succeeds(
    client: httpx.Client,
    standin: OctopusStandIn,
    start_tentacle: Callable[[str], int],
    tentacle_identity: tuple[Path, Path, str],
) -> None:
    port = start_tentacle(standin.server_thumbprint)
    machine_id = listening_machine(client, "web01", port, tentacle_identity[2].lower())
    before = client.get(f"/api/machines/{machine_id}").json()

    task = wait_for_task(client, start_health(client, EnvironmentId="Environments-1")["Id"])
    assert (task["State"], task["FinishedSuccessfully"]) == ("Success", True)
    assert task["CompletedTime"] and task["Duration"]

    machine = client.get(f"/api/machines/{machine_id}").json()
    assert (machine["HealthStatus"], machine["Status"]) == ("Healthy", "Online")
    assert machine["StatusSummary"].startswith("Octopus was able to successfully establish")
    assert machine["LastModifiedOn"] == before["LastModifiedOn"]


def test_health_check_reports_each_unavailable_machine(
    client: httpx.Client,
    standin: OctopusStandIn,
    start_tentacle: Callable[[str], int],
    tentacle_identity: tuple[Path, Path, str],
) -> None:
    tentacle_thumbprint = tentacle_identity[2]
    distrustful = listening_machine(
        client, "untrusted", start_tentacle(OTHER_THUMBPRINT), tentacle_thumbprint
    )
    wrong_thumb = listening_machine(
        client, "mismatch", start_tentacle(standin.server_thumbprint), OTHER_THUMBPRINT
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    silent = listening_machine(client, "silent", free_port, tentacle_thumbprint)
    # Accepts TCP (the kernel's backlog) but never speaks TLS.
    mute_socket = socket.create_server(("127.0.0.1", 0))
    mute = listening_machine(client, "mute", mute_socket.getsockname()[1], tentacle_thumbprint)

    with mute_socket:
        machine_ids = [distrustful, wrong_thumb, silent, mute]
        task_id = start_health(client, MachineIds=machine_ids, MachineTimeout="00:00:01")["Id"]
        task = wait_for_task(client, task_id)
    assert (task["State"], task["FinishedSuccessfully"]) == ("Failed", False)
    for name in ("untrusted", "mismatch", "silent", "mute"):
        assert name in task["ErrorMessage"]

    def summary(machine_id: str) -> str:
        machine = client.get(f"/api/machines/{machine_id}").json()
        assert (machine["HealthStatus"], machine["Status"]) == ("Unavailable", "Offline")
        return machine["StatusSummary"]

    assert summary(distrustful).startswith("The Tentacle rejected the connection: ")
    assert standin.server_thumbprint in summary(distrustful)
    assert summary(wrong_thumb) == (
        f"The remote host presented a certificate with thumbprint {tentacle_thumbprint}, "
        f"but {OTHER_THUMBPRINT} was expected."
    )
    assert "Connection refused" in summary(silent)
    assert "Timed out" in summary(mute)


def test_only_health_tasks_are_accepted(client: httpx.Client) -> None:
    assert_error_body(client.post("/api/tasks", json={"Name": "Backup"}), 400)
    bad_machine = {"Name": "Health", "Arguments": {"MachineIds": ["Machines-404"]}}
    assert_error_body(client.post("/api/tasks", json=bad_machine), 400)


# -- the real server's limits: task cap, Health task time, rate limit, task logs --


@pytest.fixture
def limited(state_dir: Path, request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    """A stand-in with the settings the test is parametrized with (over FAST)."""
    settings = replace(FAST, **request.param)
    with (
        OctopusStandIn(state_dir, API_KEY, ["Dev"], settings=settings) as server,
        httpx.Client(base_url=server.url, headers={"X-Octopus-ApiKey": API_KEY}) as http,
    ):
        yield http


def times(task: dict[str, Any], *fields: str) -> list[dt.datetime]:
    return [dt.datetime.fromisoformat(task[f]) for f in fields]


@pytest.mark.parametrize("limited", [{"task_cap": 1, "health_seconds": 0.5}], indirect=True)
def test_tasks_beyond_the_task_cap_wait_queued(limited: httpx.Client) -> None:
    first, second = start_health(limited), start_health(limited)
    assert limited.get(f"/api/tasks/{second['Id']}").json()["State"] == "Queued"
    first, second = wait_for_task(limited, first["Id"]), wait_for_task(limited, second["Id"])
    queued, started = times(second, "QueueTime", "StartTime")
    (first_done,) = times(first, "CompletedTime")
    assert started >= first_done and (started - queued).total_seconds() >= 0.4
    assert second["State"] == "Success"


@pytest.mark.parametrize(
    "limited", [{"health_seconds": 0.6, "health_seconds_per_machine": 0.2}], indirect=True
)
def test_a_health_task_takes_longer_the_more_machines_it_covers(limited: httpx.Client) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens: each check fails at once
    ids = [listening_machine(limited, f"m{n}", port, OTHER_THUMBPRINT) for n in range(3)]
    task = wait_for_task(limited, start_health(limited, MachineIds=ids)["Id"])
    started, completed = times(task, "StartTime", "CompletedTime")
    assert (completed - started).total_seconds() >= 0.6 + 2 * 0.2


@pytest.mark.parametrize("limited", [{"rate_limit": 60, "rate_burst": 2}], indirect=True)
def test_beyond_the_rate_limit_429_with_retry_after_and_nothing_done(
    limited: httpx.Client,
) -> None:
    answers = [limited.get("/api/environments/all") for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].headers["Octopus-RateLimit-Policy"] == "l=2;rpm=60"
    assert answers[1].headers["Octopus-RateLimit"].startswith("r=0;t=")
    refused = limited.post("/api/machines", json=machine_body("web01"))
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1"  # one request a second
    assert_error_body(refused, 429)
    time.sleep(1.1)  # the wait Retry-After asked for, not a readiness wait
    assert limited.get("/api/machines/all").json() == []  # the refused POST did nothing
    assert limited.post("/api/machines", json=machine_body("web01")).status_code == 429
    time.sleep(1.1)
    assert limited.post("/api/machines", json=machine_body("web01")).status_code == 201


def test_a_task_log_has_each_machines_outcome(
    client: httpx.Client,
    standin: OctopusStandIn,
    start_tentacle: Callable[[str], int],
    tentacle_identity: tuple[Path, Path, str],
) -> None:
    thumbprint = tentacle_identity[2]
    good = listening_machine(client, "good", start_tentacle(standin.server_thumbprint), thumbprint)
    bad = listening_machine(client, "bad", start_tentacle(OTHER_THUMBPRINT), thumbprint)
    task = wait_for_task(client, start_health(client, MachineIds=[good, bad])["Id"])
    details = client.get(f"/api/tasks/{task['Id']}/details").json()
    assert details["Task"]["Id"] == task["Id"] and details["Progress"]["ProgressPercentage"] == 100
    (root,) = details["ActivityLogs"]
    assert root["Status"] == "Failed"
    children = {c["Name"]: c for c in root["Children"]}
    assert children["good"]["Status"] == "Success"
    assert [e["Category"] for e in children["good"]["LogElements"]] == ["Info"]
    assert children["bad"]["Status"] == "Failed"
    (error,) = children["bad"]["LogElements"]
    assert error["Category"] == "Error"
    assert error["MessageText"].startswith("The Tentacle rejected the connection")
