"""The remote command builders and the probe parser (pure: no SSH)."""

import base64
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from octoboot import tentacle

HOSTILE = "web; touch /tmp/pwned $(id) `id` 'quoted' \"dq\"\nnext"


def sh_argv(command: str) -> list[str]:
    """What a POSIX shell would pass as argv to the first command of a command line."""
    return shlex.split(command)


def test_configure_quotes_every_value_so_nothing_breaks_out():
    command = tentacle.configure_command(
        HOSTILE, port=10933, app_dir="/home/Octopus/App dir", server_thumbprint="AB" * 20
    )
    argv = sh_argv(command)
    assert argv[0] == tentacle.EXECUTABLE
    assert argv[argv.index("--instance") + 1] == HOSTILE
    assert argv[argv.index("--app") + 1] == "/home/Octopus/App dir"
    # --reset-trust comes before --trust: one server trusted, the old ones dropped
    assert argv.index("--reset-trust") < argv.index("--trust")


def test_hostile_instance_name_runs_no_injected_command(tmp_path):
    marker = tmp_path / "pwned"
    instance = f"x; touch {marker}; $(touch {marker}) `touch {marker}`"
    command = tentacle.configure_command(
        instance, port=1, app_dir="/a", server_thumbprint="A" * 40
    ).replace(tentacle.EXECUTABLE, "true", 1)
    # the restart marker goes under /etc/octopus/<instance>: keep it in tmp_path here
    command = command.replace("/etc/octopus/", f"{tmp_path}/etc/")
    subprocess.run(["sh", "-c", command], check=True)
    assert not marker.exists()
    assert (tmp_path / "etc" / instance / ".octoboot-restart-pending").exists()


def test_as_root_wraps_in_sudo_only_when_asked():
    assert tentacle.as_root("id -u", sudo=False) == "id -u"
    assert sh_argv(tentacle.as_root("id -u; echo x", sudo=True)) == [
        "sudo", "-n", "sh", "-c", "id -u; echo x",
    ]  # fmt: skip


# A host's init reaps what a command left behind as soon as it ends; this machine's PID 1 may
# take a second or more, and until then the supervisor, waiting for the command's process
# group to be gone, counts the zombies as running. This reaper stands in for the host's init:
# it runs the supervisor's shell and reaps every orphan at once, and exits with its code.
REAPER = """
import ctypes, os, sys
ctypes.CDLL(None).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: orphans below come to this process
shell = os.spawnvp(os.P_NOWAIT, "sh", ["sh", "-c", sys.argv[1]])
while True:
    pid, status = os.wait()
    if pid == shell:
        code = os.waitstatus_to_exitcode(status)
        sys.exit(code if code >= 0 else 128 - code)
"""


def supervise(
    command: str, seconds: float = 30, line: str | None = None, grace=tentacle.GRACE_SECONDS
) -> subprocess.Popen:
    """tentacle.supervised(command) in a local shell, its stdin held open as an SSH channel's
    is while the session lasts."""
    supervised = tentacle.supervised(command, seconds, stdin_line=line is not None, grace=grace)
    proc = subprocess.Popen(
        [sys.executable, "-S", "-c", REAPER, supervised],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    if line is not None:
        proc.stdin.write(line.encode() + b"\n")
        proc.stdin.flush()
    return proc


def outlived(pattern: str) -> list[str]:
    """Processes of this machine whose command line matches pattern (not matching itself)."""
    found = subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True)
    return found.stdout.splitlines()


def wait_gone(pattern: str, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while left := outlived(pattern):
        assert time.monotonic() < deadline, f"still running: {left}"
        time.sleep(0.05)


def test_supervised_runs_the_command_with_its_exit_code_and_output():
    proc = supervise("echo out; exit 3")
    assert proc.stdout.read() == b"out\n"
    assert proc.wait(10) == 3


def test_supervised_gives_the_command_one_line_of_input_and_then_end_of_input():
    proc = supervise("cat; echo done", line="the input")
    assert proc.stdout.read() == b"the input\ndone\n"
    assert proc.wait(10) == 0


def test_supervised_gives_a_command_without_input_end_of_input_at_once():
    proc = supervise("cat; echo done")
    assert proc.stdout.read() == b"done\n"
    assert proc.wait(10) == 0


def test_supervised_stops_a_hanging_command_at_its_deadline_with_124():
    proc = supervise("sleep 931", seconds=1)
    assert proc.wait(20) == 124
    wait_gone("sleep 93[1]")


def test_supervised_ends_what_the_command_left_running_when_it_returns():
    # the second ignores SIGTERM (it says so once it does): SIGKILL follows, after a short
    # grace here
    proc = supervise(
        "sleep 932 & { sh -c 'trap \"\" TERM; echo started; exec sleep 933' & } | head -n 1",
        grace=0.3,
    )
    assert proc.stdout.read() == b"started\n"
    assert proc.wait(20) == 0
    wait_gone("sleep 93[23]")


def test_supervised_ends_the_command_and_its_children_when_stdin_ends():
    proc = supervise("sleep 934 & sleep 935")
    deadline = time.monotonic() + 10
    while len(outlived("sleep 93[45]")) < 2:
        assert time.monotonic() < deadline, "the command did not start"
        time.sleep(0.05)
    proc.stdin.close()  # what the host sees when the SSH session ends
    assert proc.wait(20) != 0
    wait_gone("sleep 93[45]")


def test_unit_name_follows_the_tentacle_rule():
    assert tentacle.unit_name("Tentacle") == "Tentacle.service"
    assert tentacle.unit_name("web a/b") == "web-ab.service"


def local_import(tmp_path, fake_tentacle: str, *, namespaces: bool) -> tuple[str, Path]:
    """The import command for this machine: a stand-in Tentacle script, and tmp_path in place
    of /dev/shm and /etc/octopus. namespaces=False: `unshare` fails, as in a container."""
    script = tmp_path / "Tentacle"
    script.write_text("#!/bin/sh\n" + fake_tentacle)
    script.chmod(0o755)
    shm = tmp_path / "shm"
    shm.mkdir(exist_ok=True)
    command = tentacle.import_identity_command("Tentacle", create_instance=False)
    command = command.replace(tentacle.EXECUTABLE, str(script))
    command = command.replace("/dev/shm", str(shm))
    command = command.replace("/etc/octopus/", f"{tmp_path}/etc/")
    if not namespaces:
        refuses = tmp_path / "bin" / "unshare"
        refuses.parent.mkdir(exist_ok=True)
        refuses.write_text(  # as in a container without CAP_SYS_ADMIN
            "#!/bin/sh\necho 'unshare failed: Operation not permitted' >&2\nexit 1\n"
        )
        refuses.chmod(0o755)
        command = f"PATH={refuses.parent}:$PATH; {command}"
    return command, shm


def run_import(tmp_path, fake_tentacle: str, pfx: bytes, *, namespaces: bool = True):
    command, shm = local_import(tmp_path, fake_tentacle, namespaces=namespaces)
    proc = subprocess.run(
        ["sh", "-c", command], input=base64.b64encode(pfx).decode(), capture_output=True,
        text=True,
    )  # fmt: skip
    return proc, shm


CAPTURE = (
    "for last; do :; done\n"
    'stat -c "%a" "$(dirname "$last")" "$last" > {capture}.modes\n'
    'stat -f -c "%T" "$last" > {capture}.fs\n'
    'cp "$last" {capture}\n'
)


@pytest.mark.skipif(os.geteuid() != 0, reason="a private mount namespace needs root")
def test_import_identity_puts_the_pfx_on_a_private_tmpfs_only(tmp_path):
    capture = tmp_path / "seen"
    proc, shm = run_import(tmp_path, CAPTURE.format(capture=capture), b"\x00pfx bytes\xff")
    assert proc.returncode == 0, proc.stderr
    assert "transient copy: on a private tmpfs" in proc.stdout
    assert capture.read_bytes() == b"\x00pfx bytes\xff"
    assert capture.with_suffix(".modes").read_text().split() == ["700", "600"]
    assert capture.with_suffix(".fs").read_text().strip() == "tmpfs"
    # the tmpfs was the command's alone: nothing ever appeared where the host looks
    assert list(shm.iterdir()) == []
    assert (tmp_path / "etc" / "Tentacle" / ".octoboot-restart-pending").exists()


def test_import_identity_without_namespaces_uses_a_private_folder_and_removes_it(tmp_path):
    capture = tmp_path / "seen"
    fake = CAPTURE.format(capture=capture) + f'dirname "$last" > {capture}.dir\n'
    proc, shm = run_import(tmp_path, fake, b"\x00pfx bytes\xff", namespaces=False)
    assert proc.returncode == 0, proc.stderr
    assert "this host makes no private mounts" in proc.stdout
    assert capture.read_bytes() == b"\x00pfx bytes\xff"
    assert capture.with_suffix(".modes").read_text().split() == ["700", "600"]
    assert Path(capture.with_suffix(".dir").read_text().strip()).parent == shm
    assert list(shm.iterdir()) == []


@pytest.mark.parametrize("namespaces", [True, False])
def test_import_identity_removes_the_pfx_even_when_the_import_fails(tmp_path, namespaces):
    if namespaces and os.geteuid() != 0:
        pytest.skip("a private mount namespace needs root")
    proc, shm = run_import(tmp_path, "exit 1\n", b"secret", namespaces=namespaces)
    assert proc.returncode != 0
    assert list(shm.iterdir()) == []


def started_import(tmp_path, then: str, prelude: str = "") -> tuple[subprocess.Popen, Path]:
    """A hung import without namespaces, in a process group (session) of its own, once its
    stand-in Tentacle has started (prelude, then `then`): the process and the folder in
    place of /dev/shm, holding the one transient copy."""
    started = tmp_path / "started"
    fake = f"{prelude}touch {started}\n{then}"
    command, shm = local_import(tmp_path, fake, namespaces=False)
    proc = subprocess.Popen(
        ["setsid", "sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        proc.stdin.write(base64.b64encode(b"secret") + b"\n")
        proc.stdin.close()
        deadline = time.monotonic() + 10
        while not started.exists():
            assert time.monotonic() < deadline, "the import did not start"
            time.sleep(0.05)
        assert len(list(shm.iterdir())) == 1
    except BaseException:  # the callers' clean-up starts only once it is returned
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        raise
    return proc, shm


def test_import_identity_removes_the_pfx_when_it_is_terminated(tmp_path):
    proc, shm = started_import(tmp_path, "exec sleep 941\n")
    os.killpg(proc.pid, signal.SIGTERM)  # as the supervisor ends a command's group
    proc.wait(10)
    assert list(shm.iterdir()) == []


def test_the_pfx_goes_when_the_group_is_told_to_end_even_if_the_tentacle_hangs_on(tmp_path):
    # A hung Tentacle that outlives SIGTERM: the copy must not wait for it to die, since
    # the supervisor's SIGKILL (after a short grace) would end the shell before its trap.
    proc, shm = started_import(tmp_path, "exec sleep 942\n", prelude="trap '' TERM\n")
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # as the supervisor ends a command's group
        deadline = time.monotonic() + 10
        while list(shm.iterdir()):
            assert time.monotonic() < deadline, "the copy outlived SIGTERM"
            time.sleep(0.05)
        assert subprocess.run(["pgrep", "-g", str(proc.pid), "sleep"]).returncode == 0  # hangs on
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the supervisor's SIGKILL after its grace
        proc.wait(10)


def test_the_probe_removes_a_killed_imports_leftovers_and_keeps_a_running_ones(tmp_path):
    shm, old_tmp = tmp_path / "shm", tmp_path / "tmp"
    gone = subprocess.Popen(["true"])
    gone.wait()
    alive = subprocess.Popen(["sleep", "60"])
    try:
        left = shm / f"octoboot-{gone.pid}-AbCdEfGh"
        running = shm / f"octoboot-{alive.pid}-IjKlMnOp"
        old = old_tmp / "octoboot-QrStUvWx"  # where octoboot kept it before
        for folder in (left, running, old):
            folder.mkdir(parents=True)
            (folder / "identity.pfx").write_bytes(b"private key")
        upload = old_tmp / "octoboot-0123abcd.tar.gz"  # an install archive: not a key
        upload.write_bytes(b"archive")
        probe = tentacle.probe_command("Tentacle", clean=False)
        probe = probe.replace("/dev/shm", str(shm))
        probe = probe.replace("/tmp/octoboot-", f"{old_tmp}/octoboot-")
        subprocess.run(["sh", "-c", probe], capture_output=True, check=True)
        assert sorted(p.name for p in shm.iterdir()) == [running.name]
        assert sorted(p.name for p in old_tmp.iterdir()) == [upload.name]
    finally:
        alive.kill()
        alive.wait()


def test_import_identity_has_no_password_on_the_command_line():
    command = tentacle.import_identity_command("Tentacle", create_instance=False)
    assert "--pfx-password" not in command and "--pw" not in command
    assert "import-certificate" in command and "create-instance" not in command


def test_import_into_a_damaged_configuration_removes_it_before_create_instance():
    command = tentacle.import_identity_command(
        "Tentacle", create_instance=True, replace_configuration=True
    )
    removal = command.index("rm -f /etc/octopus/Tentacle/tentacle-Tentacle.config")
    assert removal < command.index("create-instance") < command.index("import-certificate")


def probe_output(
    installed=True, version="8.3.2977", config=None, service="enabled\nactive", status="exit 0"
):
    parts = ["@@octoboot:installed", "yes" if installed else "no", "@@octoboot:version"]
    if installed:
        parts.append(version)
    parts += ["", "@@octoboot:configuration"]
    if config is not None:
        parts.append(json.dumps(config))
    parts += ["", "@@octoboot:configuration-status", status]
    parts += ["", "@@octoboot:service", service]
    return "\n".join(parts) + "\n"


CONFIG = {
    "Octopus": {"Home": "/etc/octopus/Tentacle"},
    "Tentacle": {
        "CertificateThumbprint": "ab" * 20,
        "Communication": {"TrustedOctopusServers": [{"Thumbprint": "CD" * 20}]},
        "Deployment": {"ApplicationDirectory": "/home/Octopus/Applications"},
        "Services": {"PortNumber": 10933, "NoListen": False, "ListenIP": None},
    },
}


def test_parse_probe_of_a_configured_host():
    probe = tentacle.parse_probe(probe_output(config=CONFIG))
    assert probe.installed and probe.instance_exists
    assert probe.version == "8.3.2977"
    assert probe.thumbprint == "AB" * 20
    assert probe.trusted == ("CD" * 20,)
    assert probe.port == 10933 and probe.no_listen is False
    assert probe.app_dir == "/home/Octopus/Applications"
    assert probe.service_enabled and probe.service_active


def test_parse_probe_of_a_bare_host():
    probe = tentacle.parse_probe(probe_output(installed=False, service="disabled\ninactive"))
    assert probe == tentacle.Probe(installed=False)


def test_parse_probe_installed_without_instance_or_service():
    probe = tentacle.parse_probe(probe_output(service="not-found\ninactive"))
    assert probe.installed and not probe.instance_exists
    assert not probe.service_enabled and not probe.service_active


@pytest.mark.parametrize("garbage", ["not json", "[1, 2]"])
def test_parse_probe_reports_unreadable_configuration(garbage):
    text = probe_output().replace(
        "@@octoboot:configuration\n", f"@@octoboot:configuration\n{garbage}"
    )
    probe = tentacle.parse_probe(text)
    assert not probe.instance_exists and probe.problems


def test_probe_command_is_one_valid_shell_command():
    proc = subprocess.run(["sh", "-n", "-c", tentacle.probe_command("Tentacle")])
    assert proc.returncode == 0


DAMAGED = "There is an error in XML document (0, 0). ---> System.Xml.XmlException: Root element"


def test_parse_probe_tells_a_damaged_configuration_from_a_missing_instance():
    damaged = tentacle.parse_probe(probe_output(status=f"{'=' * 79}\n{DAMAGED}\nexit 100"))
    assert damaged.configuration_error == DAMAGED and not damaged.instance_exists
    missing = tentacle.parse_probe(
        probe_output(status="Instance Tentacle of Tentacle has not been configured.\nexit 1")
    )
    assert missing.configuration_error is None and not missing.instance_exists
    assert tentacle.parse_probe(probe_output(config=CONFIG)).configuration_error is None


@pytest.mark.parametrize(("code", "expected"), [(100, DAMAGED), (1, None)])
def test_the_probe_keeps_what_a_failing_show_configuration_says(tmp_path, code, expected):
    fake = tmp_path / "Tentacle"
    fake.write_text(
        '#!/bin/sh\n[ "$1" = version ] && { printf 8.3.1; exit 0; }\n'
        f'echo "{"=" * 79}" >&2; echo "{DAMAGED}" >&2; exit {code}\n'
    )
    fake.chmod(0o755)
    command = tentacle.probe_command("Tentacle", clean=False)
    command = command.replace(tentacle.EXECUTABLE, str(fake))
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True).stdout
    probe = tentacle.parse_probe(out)
    assert probe.installed and probe.version == "8.3.1" and not probe.instance_exists
    assert probe.configuration_error == expected


# --- polling ---------------------------------------------------------------------------------

SERVER = "CD" * 20
# fmt: off
POLLING_CONFIG = {
    "Tentacle": {
        **CONFIG["Tentacle"],
        "Communication": {
            # `configure --trust` leaves a listening entry, `server-comms` adds the polling one
            "TrustedOctopusServers": [
                {"Thumbprint": SERVER, "CommunicationStyle": 1, "Address": None,
                 "Squid": None, "SubscriptionId": None},
                {"Thumbprint": SERVER, "CommunicationStyle": 2,
                 "Address": "https://octopus.example:10943/", "Squid": None,
                 "SubscriptionId": "poll://abcdefghij0123456789/"},
            ],
        },
        "Services": {"PortNumber": 10933, "NoListen": True},
    }
}
# fmt: on


def test_parse_probe_of_a_polling_host():
    probe = tentacle.parse_probe(probe_output(config=POLLING_CONFIG))
    assert probe.trusted == (SERVER,) and probe.no_listen is True
    assert probe.polling_address == "https://octopus.example:10943/"
    assert probe.subscription == "poll://abcdefghij0123456789/"
    listening = tentacle.parse_probe(probe_output(config=CONFIG))
    assert listening.polling_address is None and listening.subscription is None


def test_configure_polling_trusts_one_server_polls_it_and_prints_the_configuration():
    command = tentacle.configure_polling_command(
        HOSTILE, app_dir="/apps", server_thumbprint=SERVER, server_host="octopus.example",
        server_port=10943,
    )  # fmt: skip
    configure, server_comms = command.split(" && ")[:2]
    argv = sh_argv(configure)
    assert argv[argv.index("--noListen") + 1] == "True"
    assert argv.index("--reset-trust") < argv.index("--trust")
    argv = sh_argv(server_comms)
    assert argv[1] == "server-comms" and argv[argv.index("--instance") + 1] == HOSTILE
    assert argv[argv.index("--style") + 1] == "TentacleActive"
    assert (argv[argv.index("--host") + 1], argv[argv.index("--port") + 1]) == (
        "octopus.example", "10943"
    )  # fmt: skip
    assert argv[argv.index("--thumbprint") + 1] == SERVER
    assert "show-configuration" in command and "apiKey" not in command.lower()


def test_reconfigured_reads_the_new_subscription_back():
    before = tentacle.parse_probe(probe_output(config=CONFIG))
    stdout = "Removing all trusted Octopus Servers...\n" + probe_output(config=POLLING_CONFIG)
    after = tentacle.reconfigured(before, stdout)
    assert after.subscription == "poll://abcdefghij0123456789/" and after.restart_pending
    with pytest.raises(ValueError):
        tentacle.reconfigured(before, "no configuration printed")


def test_a_polling_service_waits_for_systemd_only():
    assert "/proc/net/tcp" in tentacle.service_command("Tentacle", "start", port=10933)
    polling = tentacle.service_command("Tentacle", "start", port=None)
    assert "/proc/net/tcp" not in polling and "is-active" in polling
    assert subprocess.run(["sh", "-n", "-c", polling]).returncode == 0
