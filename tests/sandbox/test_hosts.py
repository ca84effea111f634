"""Sandbox hosts are separate machines to any SSH client: own address, host key, disk
folders and processes; they can be stopped, started and rebuilt; down removes all."""

import socket
import subprocess

import pytest

from octoboot.sandbox import net, processes
from tests.sandbox.conftest import connect, run


@pytest.fixture(scope="module")
def sandbox(sandbox_factory):
    return sandbox_factory(3, install_seconds=0)


def refuses(address: str) -> bool:
    try:
        socket.create_connection((address, 22), timeout=3).close()
    except ConnectionRefusedError:
        return True
    return False


def test_each_host_has_its_own_name_address_and_host_key(sandbox, ssh):
    hosts = sandbox.hosts()
    assert len({h.address for h in hosts}) == 3
    assert len({h.host_key_public.split()[1] for h in hosts}) == 3
    for host in hosts:
        conn = ssh(sandbox, host.name)
        assert run(conn, "hostname").stdout.strip() == host.name
        assert run(conn, "id -u").stdout.strip() == "0"
        served = conn.client.get_transport().get_remote_server_key().get_base64()
        assert served == host.host_key_public.split()[1]


def test_tentacle_folders_are_private_to_each_host(sandbox, ssh):
    one, two = ssh(sandbox, "sbx01"), ssh(sandbox, "sbx02")
    for folder in ("/opt/octopus", "/etc/octopus", "/home/Octopus", "/tmp"):
        assert run(one, f"echo one > {folder}/isolation-probe").ok
        assert run(two, f"test -e {folder}/isolation-probe").exited == 1
    assert sandbox.host("sbx01").disk_path("/opt/octopus/isolation-probe").read_text() == "one\n"


def test_login_environment_is_clean(sandbox, ssh):
    # root's .bashrc on the controller runs `pyenv init`; a host must not run it
    result = run(ssh(sandbox, "sbx01"), "echo $PYENV_ROOT; command -v systemctl")
    assert result.stdout.split("\n")[0] == ""
    assert result.stdout.split("\n")[1] == "/usr/local/sbin/systemctl"


def test_processes_belong_to_their_host(sandbox, ssh):
    conn = ssh(sandbox, "sbx03")
    run(conn, "setsid sleep 600 </dev/null >/dev/null 2>&1 &")
    assert run(conn, "pgrep -x sleep").ok
    assert run(ssh(sandbox, "sbx02"), "pgrep -x sleep").exited == 1
    # the controller sees the process, but inside the host's own PID namespace
    assert run(conn, "ps -o pid= -p 1").stdout.strip() == "1"


def test_stop_refuses_connections_and_ends_processes_start_brings_it_back(sandbox):
    conn = connect(sandbox, "sbx03")
    run(conn, "setsid sleep 600 </dev/null >/dev/null 2>&1 &")
    conn.close()
    address = sandbox.host("sbx03").address
    sandbox.stop_host("sbx03")
    assert not sandbox.host_is_running("sbx03")
    assert refuses(address)
    sandbox.start_host("sbx03")
    conn = connect(sandbox, "sbx03")
    try:
        assert run(conn, "hostname").stdout.strip() == "sbx03"
        assert run(conn, "pgrep -x sleep").exited == 1  # the old host's process is gone
    finally:
        conn.close()


def test_rebuild_empties_the_disk_and_changes_the_host_key(sandbox):
    host = sandbox.host("sbx02")
    conn = connect(sandbox, "sbx02")
    run(conn, "mkdir -p /opt/octopus/tentacle && touch /opt/octopus/tentacle/Tentacle")
    conn.close()
    old_key = host.host_key_public
    sandbox.rebuild_host("sbx02")
    assert host.host_key_public != old_key
    conn = connect(sandbox, "sbx02")
    try:
        assert run(conn, "ls -A /opt/octopus /etc/octopus /home/Octopus").stdout.split() == [
            "/etc/octopus:", "/home/Octopus:", "/opt/octopus:",
        ]  # fmt: skip
        served = conn.client.get_transport().get_remote_server_key().get_base64()
        assert served == host.host_key_public.split()[1]
    finally:
        conn.close()


def test_blackhole_makes_a_host_silent_not_refusing(sandbox):
    address = sandbox.host("sbx01").address
    sandbox.set_blackhole("sbx01", True)
    try:
        with pytest.raises(TimeoutError):
            socket.create_connection((address, 22), timeout=1.5)
    finally:
        sandbox.set_blackhole("sbx01", False)
    socket.create_connection((address, 22), timeout=5).close()


def test_down_leaves_nothing_behind(sandbox_factory):
    sandbox = sandbox_factory(2, install_seconds=0)
    state = sandbox.state()
    slot = net.Slot(state["slot"])
    recorded = [processes.Recorded.from_json(h["process"]) for h in state["hosts"]]
    recorded += [processes.Recorded.from_json(p) for p in state["servers"].values()]
    assert all(processes.is_alive(r) for r in recorded)
    sandbox.down()
    sandbox.down()  # idempotent
    assert not sandbox.root.exists()
    assert net.namespaces(slot.prefix) == []
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert slot.bridge not in links and f"ob{slot.number}h" not in links
    assert not any(processes.is_alive(r) for r in recorded)
