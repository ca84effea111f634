"""Sandbox hosts are separate machines to any SSH client: own address, host key, disk
folders and processes; they can be stopped, started and rebuilt; down removes all."""

import socket
import subprocess
import sys
import time

import pytest

from octoboot.sandbox import net, processes
from tests.sandbox.conftest import connect, run
from tests.sandbox.project import REPO


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


def processes_in_namespace(ns: str) -> list[processes.Recorded]:
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
    found = [processes.Recorded(int(pid), processes.start_ticks(int(pid))) for pid in pids.split()]
    return [rec for rec in found if rec.start_ticks is not None]


# A process of a host that takes a second to end once the host is gone, as a big one does.
SLOW_TO_END = """
import sys, time
from octoboot.sandbox import processes
host = processes.Recorded(int(sys.argv[1]), int(sys.argv[2]))
while processes.is_alive(host):
    time.sleep(0.02)
time.sleep(1)
"""


def slow_to_end(sandbox, name: str) -> subprocess.Popen:
    """A process in the host's network namespace that ends a second after the host."""
    entry = next(h for h in sandbox.state()["hosts"] if h["name"] == name)
    host = processes.Recorded.from_json(entry["process"])
    slow = subprocess.Popen(
        ["ip", "netns", "exec", entry["namespace"], sys.executable, "-c", SLOW_TO_END,
         str(host.pid), str(host.start_ticks)],
        cwd=REPO, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    # `ip netns exec` enters the namespace after the fork: wait until it has.
    deadline = time.monotonic() + 10
    while slow.pid not in {rec.pid for rec in processes_in_namespace(entry["namespace"])}:
        if time.monotonic() > deadline:
            slow.kill()
            slow.wait()
            raise AssertionError(f"pid {slow.pid} never entered {entry['namespace']}")
        time.sleep(0.02)
    return slow


def test_stop_returns_only_when_the_hosts_processes_are_gone(sandbox):
    slow = slow_to_end(sandbox, "sbx03")
    try:
        inside = processes_in_namespace(sandbox.host("sbx03").namespace)
        assert slow.pid in {rec.pid for rec in inside}
        sandbox.stop_host("sbx03")
        assert [rec.pid for rec in inside if processes.is_alive(rec)] == []
    finally:
        slow.kill()
        slow.wait()
        sandbox.start_host("sbx03")


def test_down_returns_only_when_every_host_process_is_gone(sandbox_factory):
    sandbox = sandbox_factory(3, install_seconds=0)
    for host in sandbox.hosts():
        conn = connect(sandbox, host.name)
        run(conn, "setsid sleep 600 </dev/null >/dev/null 2>&1 &")
        conn.close()
    state = sandbox.state()
    slow = slow_to_end(sandbox, "sbx01")
    try:
        slot = net.Slot(state["slot"])
        inside = [rec for ns in net.namespaces(slot.prefix) for rec in processes_in_namespace(ns)]
        # each host's sshd and sleep, the slow one, and the two stand-in servers
        assert len(inside) >= 2 * 3 + 1 + 2
        assert slow.pid in {rec.pid for rec in inside}
        sandbox.down()
        assert [rec.pid for rec in inside if processes.is_alive(rec)] == []
    finally:
        slow.kill()
        slow.wait()


def test_a_wide_slot_joins_both_halves_and_keeps_its_second_slot_taken():
    with net.slot_lock():
        slot = net.free_slot(wide=True)
        net.create_bridge(slot)
    server = None
    try:
        assert {slot.number, slot.number + 1} <= net.slots_in_use()
        with net.slot_lock():
            assert net.free_slot().number not in (slot.number, slot.number + 1)
        near, far = slot.namespace("near"), slot.namespace("far")
        net.create_namespaces(
            slot, [(near, 1, slot.host_address(1)), (far, 241, slot.host_address(241))]
        )
        address = slot.host_address(241)  # in the second slot's 24
        server = subprocess.Popen(
            ["ip", "netns", "exec", far, sys.executable, "-m", "http.server", "8000",
             "--bind", address],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:  # the controller reaches it, once it listens
            try:
                socket.create_connection((address, 8000), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"{address}:8000 never answered"
                time.sleep(0.05)
        reach = f"import socket; socket.create_connection(({address!r}, 8000), timeout=5)"
        # and so does a host in the first slot's 24, on the same link
        subprocess.run(["ip", "netns", "exec", near, sys.executable, "-c", reach], check=True)
    finally:
        if server:
            server.kill()
            server.wait()
        net.remove_slot(slot)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert f"{slot.bridge}:" not in links and f"{slot.reserved_bridge}:" not in links
    assert net.namespaces(slot.prefix) == []
