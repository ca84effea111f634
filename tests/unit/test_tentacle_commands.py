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
