"""The Tentacle stand-in installed on sandbox hosts the way the real archive is, and driven
over real SSH; the Octopus stand-in checks its health over real mutual TLS."""

import io
import json
import re
import time

import pytest

from octoboot import certificates
from tests.sandbox.conftest import run

T = "/opt/octopus/tentacle/Tentacle"
CONFIG = "/etc/octopus/default/tentacle-default.config"


@pytest.fixture(scope="module")
def sandbox(sandbox_factory):
    return sandbox_factory(3, install_seconds=0)


def install(conn, sandbox):
    url = sandbox.endpoints().package_url + "/tentacle-8.3.2977-net8.0-linux-x64.tar.gz"
    result = run(conn, f"mkdir -p /opt/octopus && curl -fsS {url} | tar -xz -C /opt/octopus")
    assert result.ok, result.stderr


def listening_sequence(conn, server_thumbprint, trust=True):
    """octopus-facts §1.4, the documented automation for a listening Tentacle."""
    steps = [
        f"{T} create-instance --config {CONFIG}",
        f"{T} new-certificate --if-blank",
        f"{T} configure --port 10933 --noListen False --reset-trust"
        ' --app "/home/Octopus/Applications/"',
    ]
    if trust:
        steps.append(f"{T} configure --trust {server_thumbprint}")
    steps.append(f"{T} service --install --start")
    for step in steps:
        result = run(conn, step)
        assert result.ok, f"{step}: {result.stdout}{result.stderr}"


def wait_listening(conn, port=10933):
    deadline = time.monotonic() + 20
    probe = f"grep -q ':{port:04X} [0-9A-F]*:0000 0A' /proc/net/tcp"
    while not run(conn, probe).ok:
        assert time.monotonic() < deadline, "the Tentacle never listened"
        time.sleep(0.1)


def server_thumbprint(octopus):
    return octopus.get("/api/configuration/certificates/certificate-global").json()["Thumbprint"]


def register(octopus, name, address, thumbprint):
    env = octopus.get("/api/Spaces-1/environments", params={"name": "Sandbox"}).json()["Items"][0]
    body = {
        "Name": name,
        "EnvironmentIds": [env["Id"]],
        "Roles": ["web"],
        "Endpoint": {
            "CommunicationStyle": "TentaclePassive",
            "Uri": f"https://{address}:10933/",
            "Thumbprint": thumbprint,
        },
    }
    response = octopus.post("/api/Spaces-1/machines", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def health(octopus, machine_id):
    task = octopus.post(
        "/api/tasks", json={"Name": "Health", "Arguments": {"MachineIds": [machine_id]}}
    ).json()
    deadline = time.monotonic() + 30
    while not task["IsCompleted"]:
        assert time.monotonic() < deadline, "health task never finished"
        time.sleep(0.1)
        task = octopus.get(f"/api/tasks/{task['Id']}").json()
    return octopus.get(f"/api/Spaces-1/machines/{machine_id}").json()


def test_the_documented_listening_sequence_gives_a_healthy_machine(sandbox, ssh, octopus):
    conn = ssh(sandbox, "sbx01")
    install(conn, sandbox)
    listening_sequence(conn, server_thumbprint(octopus))
    wait_listening(conn)
    thumbprint = run(conn, f"{T} show-thumbprint").stdout
    assert re.fullmatch(r"[0-9A-F]{40}", thumbprint), thumbprint
    machine = register(octopus, "sbx01", sandbox.host("sbx01").address, thumbprint)
    checked = health(octopus, machine["Id"])
    assert checked["HealthStatus"] == "Healthy", checked["StatusSummary"]
    # a second start is harmless: still one agent, still healthy
    assert run(conn, f"{T} service --start").ok
    assert run(conn, "pgrep -c -f 'tentacle/Tentacle run'").stdout.strip() == "1"
    assert health(octopus, machine["Id"])["HealthStatus"] == "Healthy"


def test_a_tentacle_that_does_not_trust_the_server_is_unavailable(sandbox, ssh, octopus):
    conn = ssh(sandbox, "sbx02")
    install(conn, sandbox)
    listening_sequence(conn, server_thumbprint(octopus), trust=False)
    wait_listening(conn)
    thumbprint = run(conn, f"{T} show-thumbprint").stdout
    machine = register(octopus, "sbx02", sandbox.host("sbx02").address, thumbprint)
    checked = health(octopus, machine["Id"])
    assert checked["HealthStatus"] == "Unavailable"
    assert "trust" in checked["StatusSummary"]


def test_a_stopped_tentacle_is_unavailable(sandbox, ssh, octopus):
    conn = ssh(sandbox, "sbx02")
    assert run(conn, f"{T} service --stop").ok
    machines = octopus.get("/api/Spaces-1/machines", params={"name": "sbx02"}).json()["Items"]
    assert health(octopus, machines[0]["Id"])["HealthStatus"] == "Unavailable"


def test_import_of_a_pfx_minted_on_the_controller_gives_its_thumbprint(sandbox, ssh):
    key, cert = certificates.new_self_signed()
    pfx = certificates.to_pfx(key, cert, None)
    conn = ssh(sandbox, "sbx03")
    install(conn, sandbox)
    assert run(conn, f"{T} create-instance --instance Tentacle --config {CONFIG}").ok
    conn.put(io.BytesIO(pfx), "/tmp/identity.pfx")
    result = run(conn, f"{T} import-certificate --instance Tentacle --from-file /tmp/identity.pfx")
    assert result.ok, result.stderr
    assert run(conn, f"{T} show-thumbprint --instance Tentacle").stdout == certificates.thumbprint(
        cert
    )
    shown = json.loads(run(conn, f"{T} show-thumbprint --format json").stdout)
    assert shown == {"Thumbprint": certificates.thumbprint(cert)}


@pytest.mark.parametrize(
    ("command", "exit_code", "stream_text"),
    [
        (f"{T} show-thumbprint --FORMAT=json", 0, '{"Thumbprint":'),
        (f"{T} show-thumbprint /format:json", 0, '{"Thumbprint":'),
        (f"{T} show-thumbprint -format json", 0, '{"Thumbprint":'),
        (f"{T} show-thumbprint --format=xml", 1, "The format 'xml' is not supported"),
        (f"{T} show-thumbprint --bogus", 1, "Unrecognized command line arguments"),
        (f"{T} frobnicate", 2, "Command 'frobnicate' is not supported"),
        (f"{T} configure --port=notanumber", 100, "="),
    ],
)
def test_option_rules_and_exit_codes_over_ssh(sandbox, ssh, command, exit_code, stream_text):
    conn = ssh(sandbox, "sbx03")
    result = run(conn, command)
    assert result.exited == exit_code, result.stdout + result.stderr
    assert stream_text in result.stdout + result.stderr


def test_the_host_records_every_tentacle_call(sandbox):
    calls = sandbox.host("sbx03").tentacle_calls()
    assert ["import-certificate", "--instance", "Tentacle", "--from-file", "/tmp/identity.pfx"] in [
        c[1:] for c in calls
    ]
