"""The remote command builders and the probe parser (pure: no SSH)."""

import base64
import json
import shlex
import subprocess

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


def test_with_deadline_bounds_the_command_on_the_host():
    argv = sh_argv(tentacle.with_deadline("sleep 30", 12.7))
    assert argv[:4] == ["timeout", "-k", "5", "12"]
    assert argv[4:] == ["sh", "-c", "sleep 30"]


def test_with_deadline_really_stops_a_hanging_command():
    proc = subprocess.run(["sh", "-c", tentacle.with_deadline("sleep 30", 1)])
    assert proc.returncode == 124


def test_unit_name_follows_the_tentacle_rule():
    assert tentacle.unit_name("Tentacle") == "Tentacle.service"
    assert tentacle.unit_name("web a/b") == "web-ab.service"


def run_import(tmp_path, fake_tentacle: str, pfx: bytes) -> subprocess.CompletedProcess:
    """The import command on this machine, with a stand-in Tentacle script and its temporary
    folder under tmp_path."""
    script = tmp_path / "Tentacle"
    script.write_text("#!/bin/sh\n" + fake_tentacle)
    script.chmod(0o755)
    command = tentacle.import_identity_command("Tentacle", create_instance=False)
    command = command.replace(tentacle.EXECUTABLE, str(script))
    command = command.replace("/tmp/octoboot-", f"{tmp_path}/octoboot-")
    command = command.replace("mkdir -p /etc/octopus/", f"mkdir -p {tmp_path}/etc/")
    command = command.replace("touch /etc/octopus/", f"touch {tmp_path}/etc/")
    return subprocess.run(
        ["sh", "-c", command], input=base64.b64encode(pfx).decode(), capture_output=True,
        text=True,
    )  # fmt: skip


def test_import_identity_gets_the_pfx_from_stdin_in_a_private_folder_and_removes_it(tmp_path):
    capture = tmp_path / "seen"
    fake = (
        "for last; do :; done\n"
        f'stat -c "%a" "$(dirname "$last")" "$last" > {capture}.modes\n'
        f'cp "$last" {capture}\n'
    )
    proc = run_import(tmp_path, fake, b"\x00pfx bytes\xff")
    assert proc.returncode == 0, proc.stderr
    assert capture.read_bytes() == b"\x00pfx bytes\xff"
    assert capture.with_suffix(".modes").read_text().split() == ["700", "600"]
    assert list(tmp_path.glob("octoboot-*")) == []
    assert (tmp_path / "etc" / "Tentacle" / ".octoboot-restart-pending").exists()


def test_import_identity_removes_the_pfx_even_when_the_import_fails(tmp_path):
    proc = run_import(tmp_path, "exit 1\n", b"secret")
    assert proc.returncode != 0
    assert list(tmp_path.glob("octoboot-*")) == []


def test_import_identity_has_no_password_on_the_command_line():
    command = tentacle.import_identity_command("Tentacle", create_instance=False)
    assert "--pfx-password" not in command and "--pw" not in command
    assert "import-certificate" in command and "create-instance" not in command


def probe_output(installed=True, version="8.3.2977", config=None, service="enabled\nactive"):
    parts = ["@@octoboot:installed", "yes" if installed else "no", "@@octoboot:version"]
    if installed:
        parts.append(version)
    parts += ["", "@@octoboot:configuration"]
    if config is not None:
        parts.append(json.dumps(config))
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
