"""The systemctl stand-in's launcher, run locally as hosts run it: the read-only verbs its
shell answers (is-active, is-enabled, daemon-reload) tell what systemctl tells, with its exit
codes (systemctl(1): is-active 0 or 3, is-enabled 0 or 1), and the verbs it hands to Python
still work beside them."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from octoboot.sandbox.archive import write_systemctl_launcher
from tests.sandbox.test_tentacle_standin_local import alive, wait_for


class Host:
    def __init__(self, root: Path) -> None:
        self.units, self.control = root / "units", root / "control"
        self.units.mkdir()
        (self.control / "units").mkdir(parents=True)
        self.exe = root / "bin" / "systemctl"
        write_systemctl_launcher(self.exe)
        self.env = {
            "PATH": os.environ["PATH"],
            "OCTOBOOT_SANDBOX_SYSTEMD_DIR": str(self.units),
            "OCTOBOOT_SANDBOX_HOST_DIR": str(self.control),
        }

    def run(self, *args: str) -> tuple[int, str, str]:
        done = subprocess.run(
            [self.exe, *args], env=self.env, capture_output=True, text=True, timeout=60
        )
        return done.returncode, done.stdout, done.stderr

    def unit(self, name: str, *, enabled: bool = False) -> None:
        (self.units / name).write_text("[Service]\nExecStart=/bin/sleep 60\n")
        if enabled:
            wants = self.units / "multi-user.target.wants"
            wants.mkdir(exist_ok=True)
            (wants / name).symlink_to(self.units / name)

    def pid_file(self, name: str, content: str) -> None:
        (self.control / "units" / f"{name}.pid").write_text(content)


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    made = Host(tmp_path)
    yield made
    for started in ("started", "quoted"):  # the services the tests start for real
        if (made.control / "units" / f"{started}.service.pid").exists():
            subprocess.run([made.exe, "stop", started], env=made.env, check=True, timeout=60)


def test_is_active_tells_each_state_by_the_pid_file(host: Host) -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    ended = subprocess.Popen(["true"])  # a zombie until waited for: not active
    try:
        wait_for(lambda: not alive(ended.pid), "`true` to end")  # a zombie, not reaped
        host.pid_file("up.service", f"{sleeper.pid}\n")
        host.pid_file("dead.service", f"{ended.pid}\n")
        host.pid_file("junk.service", "not a pid\n")
        assert host.run("is-active", "up") == (0, "active\n", "")
        assert host.run("is-active", "dead.service") == (3, "failed\n", "")
        assert host.run("is-active", "junk") == (3, "failed\n", "")
        assert host.run("is-active", "never") == (3, "inactive\n", "")
        assert host.run("is-active", "--quiet", "up") == (0, "", "")
        assert host.run("-q", "is-active", "never") == (3, "", "")
        # One line per unit; the exit code is the worst of them.
        assert host.run("is-active", "up", "never", "--no-pager") == (3, "active\ninactive\n", "")
    finally:
        sleeper.kill()
        sleeper.wait()
        ended.wait()


def test_is_enabled_looks_for_the_units_wants_links(host: Host) -> None:
    host.unit("on.service", enabled=True)
    host.unit("off.service")
    assert host.run("is-enabled", "on") == (0, "enabled\n", "")
    assert host.run("is-enabled", "off.service") == (1, "disabled\n", "")
    assert host.run("is-enabled", "--quiet", "on") == (0, "", "")
    missing = "Failed to get unit file state for gone.service: No such file or directory\n"
    assert host.run("is-enabled", "gone") == (1, "", missing)
    assert host.run("is-enabled", "on", "gone") == (1, "enabled\n", missing)


def test_argument_errors_and_daemon_reload(host: Host) -> None:
    assert host.run("daemon-reload") == (0, "", "")
    assert host.run("is-active") == (1, "", "Too few arguments for is-active.\n")
    assert host.run("is-enabled", "-q") == (1, "", "Too few arguments for is-enabled.\n")
    assert host.run("bogus", "x") == (1, "", "Unknown command verb bogus.\n")
    assert host.run() == (1, "", "systemctl stand-in: a verb is required\n")


def test_the_verbs_python_answers_agree_with_the_shells(host: Host) -> None:
    host.unit("started.service")
    assert host.run("enable", "started")[0] == 0
    assert host.run("is-enabled", "started") == (0, "enabled\n", "")
    assert host.run("start", "started") == (0, "", "")
    assert host.run("is-active", "started") == (0, "active\n", "")
    assert host.run("stop", "started") == (0, "", "")
    assert host.run("is-active", "started") == (3, "inactive\n", "")
    assert host.run("disable", "started")[0] == 0
    assert host.run("is-enabled", "started") == (1, "disabled\n", "")


def test_units_are_read_and_started_as_systemd_does(host: Host, tmp_path: Path) -> None:
    # systemd.syntax(7): comments, a continued line, list settings that add up, an empty
    # value that resets; systemd.service(5): quoted words in the command line.
    (host.units / "quoted.service").write_text(
        "[Unit]\n; a comment\nDescription=Quoted words\n"
        '[Service]\nExecStart=/bin/sh -c \'printf "<%s>" "$0" "$1" >&2; exec sleep 60\' \\\n'
        '  "two  words" three\n'
        "[Install]\nWantedBy=gone.target\nWantedBy=\nWantedBy=a.target b.target\n"
        "WantedBy = c.target\n"
    )
    assert host.run("enable", "quoted") == (
        0,
        "",
        "".join(
            f"Created symlink {host.units}/{t}.target.wants/quoted.service \u2192 "
            f"{host.units}/quoted.service.\n"
            for t in "abc"
        ),
    )
    assert not (host.units / "gone.target.wants").exists()
    # A descriptor the caller leaves open (an SSH session's pipe) must not reach the service.
    with open(tmp_path / "held", "w") as held:
        os.set_inheritable(held.fileno(), True)
        done = subprocess.run(
            [host.exe, "start", "quoted"], env=host.env, close_fds=False, timeout=60
        )
    assert done.returncode == 0
    pid = int((host.control / "units" / "quoted.service.pid").read_text())
    try:
        assert sorted(os.listdir(f"/proc/{pid}/fd")) == ["0", "1", "2"]
        assert os.readlink(f"/proc/{pid}/cwd") == "/"
        log = host.control / "units" / "quoted.service.log"
        wait_for(lambda: "<two  words><three>" in log.read_text(), "the service's log")
        assert host.run("status", "quoted")[1].startswith("\u25cf quoted.service - Quoted words\n")
    finally:
        assert host.run("stop", "quoted")[0] == 0


def test_a_service_that_cannot_start_says_why(host: Host) -> None:
    (host.units / "missing.service").write_text("[Service]\nExecStart=/nonexistent/tentacle run\n")
    (host.units / "empty.service").write_text("[Service]\nType=simple\n")
    assert host.run("start", "missing") == (
        1,
        "",
        "Job for missing.service failed: [Errno 2] No such file or directory: "
        "'/nonexistent/tentacle'\n",
    )
    assert host.run("start", "empty") == (
        1,
        "",
        "Failed to start empty.service: Unit empty.service has a bad unit file setting.\n",
    )
    assert host.run("start", "absent") == (
        5,
        "",
        "Failed to start absent.service: Unit absent.service not found.\n",
    )
