"""The Tentacle stand-in as a host runs it: built into the real archive shape, extracted, and
run as `tentacle/Tentacle` in subprocesses, with every path it touches moved into tmp dirs by
the same environment overrides the real Tentacle (and the sandbox) honour.

The PFX password and API keys below are throwaway test values: the real Tentacle CLI only takes
them as options, so they appear on these local command lines by necessity.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import tarfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from octoboot import certificates
from octoboot.sandbox.archive import (
    DEFAULT_TENTACLE_VERSION,
    build_tentacle_archive,
    write_systemctl_launcher,
)
from octoboot.sandbox.octopus_api.server import OctopusStandIn

PFX_PASSWORD = "test-only-pfx-password"
API_KEY = "API-TENTACLESTANDINTEST0001"
UNIT = "Tentacle.service"
DEADLINE_SECONDS = 15.0


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def wait_for(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def accepts_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@dataclass
class Identity:
    """A key pair and certificate, with PEM files a TLS client can load."""

    key: object
    cert: object
    thumbprint: str
    cert_file: Path
    key_file: Path

    @classmethod
    def mint(cls, directory: Path, name: str) -> Identity:
        key, cert = certificates.new_self_signed(name)
        key_pem, cert_pem = certificates.to_pem(key, cert)
        directory.mkdir(parents=True, exist_ok=True)
        key_file, cert_file = directory / f"{name}.key", directory / f"{name}.crt"
        key_file.write_bytes(key_pem)
        key_file.chmod(0o600)
        cert_file.write_bytes(cert_pem)
        return cls(key, cert, certificates.thumbprint(cert), cert_file, key_file)


@dataclass
class Host:
    """One extracted Tentacle with its own config root, control dir and systemd dir."""

    exe: Path
    root: Path
    env: dict[str, str]

    @property
    def config_root(self) -> Path:
        return self.root / "etc-octopus"

    @property
    def control_dir(self) -> Path:
        return self.root / "control"

    @property
    def systemd_dir(self) -> Path:
        return self.root / "systemd"

    @property
    def default_config(self) -> Path:
        return self.config_root / "default" / "tentacle-default.config"

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.exe), *args],
            env=self.env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    def service_pid(self) -> int:
        return int((self.control_dir / "units" / f"{UNIT}.pid").read_text())

    def settings(self) -> dict[str, str]:
        root = ET.parse(self.default_config).getroot()
        return {e.get("key", ""): e.text or "" for e in root.iter("set")}

    def recorded_argv(self) -> list[dict]:
        lines = (self.control_dir / "argv.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]

    def kill_services(self) -> None:
        for pid_file in (self.control_dir / "units").glob("*.pid"):
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tentacle_archive(tmp_path_factory.mktemp("dist"))


@pytest.fixture
def make_host(archive: Path, tmp_path: Path) -> Iterator[Callable[[str], Host]]:
    made: list[Host] = []

    def make(name: str = "host") -> Host:
        root = tmp_path / name
        with tarfile.open(archive) as tar:
            tar.extractall(root / "opt", filter="tar")
        write_systemctl_launcher(root / "bin" / "systemctl")
        env = {
            **os.environ,
            "PATH": f"{root / 'bin'}:{os.environ['PATH']}",
            "TentacleMachineConfigurationHomeDirectory": str(root / "etc-octopus"),
            "OCTOBOOT_SANDBOX_HOST_DIR": str(root / "control"),
            "OCTOBOOT_SANDBOX_SYSTEMD_DIR": str(root / "systemd"),
        }
        host = Host(root / "opt" / "tentacle" / "Tentacle", root, env)
        made.append(host)
        return host

    yield make
    for host in made:
        host.kill_services()


@pytest.fixture
def host(make_host: Callable[[str], Host]) -> Host:
    return make_host("host")


def create_default_instance(host: Host) -> None:
    host.ok("create-instance", "--config", str(host.default_config))


def import_identity(host: Host, identity: Identity) -> str:
    pfx = host.root / "identity.pfx"
    pfx.write_bytes(certificates.to_pfx(identity.key, identity.cert, PFX_PASSWORD))
    pfx.chmod(0o600)
    return host.ok("import-certificate", "--from-file", str(pfx), "--pfx-password", PFX_PASSWORD)


def https_get(port: int, client: Identity | None) -> tuple[str, int, str]:
    """(thumbprint the Tentacle presented, HTTP status, body) over real TLS."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the Tentacle's identity is its thumbprint
    if client:
        context.load_cert_chain(client.cert_file, client.key_file)
    connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    try:
        connection.request("GET", "/")
        assert connection.sock is not None
        presented = certificates.thumbprint_of_der(connection.sock.getpeercert(binary_form=True))
        response = connection.getresponse()
        return presented, response.status, response.read().decode()
    finally:
        connection.close()


# -- the documented listening sequence and the service it starts --


@dataclass
class Listening:
    host: Host
    port: int
    tentacle: Identity
    octopus: Identity


@pytest.fixture
def listening(host: Host, tmp_path: Path) -> Listening:
    """octopus-facts §1.4 with an imported identity, up to `service --install --start`."""
    tentacle = Identity.mint(tmp_path / "pki", "Octopus Tentacle")
    octopus = Identity.mint(tmp_path / "pki", "Octopus Portal")
    port = free_port()
    create_default_instance(host)
    host.ok("new-certificate", "--if-blank")
    import_identity(host, tentacle)
    host.ok(
        "configure",
        "--port",
        str(port),
        "--listenIpAddress",
        "127.0.0.1",
        "--noListen",
        "False",
        "--reset-trust",
        "--app",
        str(host.root / "Applications"),
    )
    host.ok("configure", "--trust", octopus.thumbprint)
    started = host.ok("service", "--install", "--start")
    assert "Service installed: Tentacle" in started
    assert "Service started: Tentacle" in started
    wait_for(lambda: accepts_connections(port), "the Tentacle service to listen")
    return Listening(host, port, tentacle, octopus)


def test_listening_sequence_configures_the_instance_and_installs_the_unit(
    listening: Listening,
) -> None:
    host = listening.host
    settings = host.settings()
    assert settings["Tentacle.Services.PortNumber"] == str(listening.port)
    assert settings["Tentacle.Services.ListenIP"] == "127.0.0.1"
    assert settings["Tentacle.Services.NoListen"].lower() == "false"
    assert settings["Tentacle.Deployment.ApplicationDirectory"] == str(host.root / "Applications")
    assert settings["Tentacle.CertificateThumbprint"] == listening.tentacle.thumbprint
    trusted = json.loads(settings["Tentacle.Communication.TrustedOctopusServers"])
    assert [s["Thumbprint"] for s in trusted] == [listening.octopus.thumbprint]
    index_file = host.config_root / "Tentacle" / "Instances" / "tentacle.config"
    index = json.loads(index_file.read_text())
    assert index == {"Name": "Tentacle", "ConfigurationFilePath": str(host.default_config)}
    unit = (host.systemd_dir / UNIT).read_text()
    assert f"ExecStart={host.exe} run --instance=Tentacle --noninteractive\n" in unit
    assert "WantedBy=multi-user.target" in unit
    wants = host.systemd_dir / "multi-user.target.wants" / UNIT
    assert wants.resolve() == host.systemd_dir / UNIT


def test_service_presents_the_imported_certificate_and_answers_by_client_thumbprint(
    listening: Listening, tmp_path: Path
) -> None:
    presented, status, body = https_get(listening.port, listening.octopus)
    assert presented == listening.tentacle.thumbprint
    assert status == 200
    assert json.loads(body) == {
        "Application": "Octopus Tentacle",
        "Version": DEFAULT_TENTACLE_VERSION,
        "Thumbprint": listening.tentacle.thumbprint,
    }
    stranger = Identity.mint(tmp_path / "pki", "Someone Else")
    presented, status, body = https_get(listening.port, stranger)
    assert presented == listening.tentacle.thumbprint
    assert status == 403
    assert stranger.thumbprint in body
    _, status, body = https_get(listening.port, None)
    assert status == 403
    assert "no client certificate" in body
    log = (listening.host.default_config.parent / "Logs" / "OctopusTentacle.txt").read_text()
    assert f"Accepted a connection from 127.0.0.1 as {listening.octopus.thumbprint}" in log
    assert f"thumbprint {stranger.thumbprint}" in log


def test_service_reads_trust_only_when_it_starts(listening: Listening, tmp_path: Path) -> None:
    newcomer = Identity.mint(tmp_path / "pki", "New Octopus")
    listening.host.ok("configure", "--trust", newcomer.thumbprint)
    assert https_get(listening.port, newcomer)[1] == 403
    listening.host.ok("service", "--restart")
    wait_for(lambda: accepts_connections(listening.port), "the restarted service to listen")
    assert https_get(listening.port, newcomer)[1] == 200


def test_second_start_is_harmless_and_stop_ends_the_process(listening: Listening) -> None:
    host = listening.host
    pid = host.service_pid()
    again = host.run("service", "--start")
    assert again.returncode == 0
    assert host.service_pid() == pid
    assert https_get(listening.port, listening.octopus)[1] == 200
    stopped = host.ok("service", "--stop")
    assert "Service stopped" in stopped
    wait_for(lambda: not alive(pid), "the service process to end")
    assert host.run("service", "--stop").returncode == 0
    active = subprocess.run(
        ["systemctl", "is-active", "Tentacle"], env=host.env, capture_output=True, text=True
    )
    assert (active.returncode, active.stdout.strip()) == (3, "inactive")


def test_stop_ends_a_suspended_service_cleanly_as_systemd_does(listening: Listening) -> None:
    # systemd sends SIGCONT right after SIGTERM, so a stopped (hung) process acts on it at
    # once instead of being SIGKILLed after the stop timeout.
    host = listening.host
    pid = host.service_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        host.ok("service", "--stop")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    wait_for(lambda: not alive(pid), "the service process to end")
    log = (host.default_config.parent / "Logs" / "OctopusTentacle.txt").read_text()
    assert "Tentacle has stopped" in log


def test_uninstall_removes_the_unit_and_its_enablement(listening: Listening) -> None:
    host = listening.host
    pid = host.service_pid()
    host.ok("service", "--stop", "--uninstall")
    wait_for(lambda: not alive(pid), "the service process to end")
    assert not (host.systemd_dir / UNIT).exists()
    assert not (host.systemd_dir / "multi-user.target.wants" / UNIT).exists()


# -- certificates and thumbprints --


def test_imported_pfx_gives_exactly_its_thumbprint(host: Host, tmp_path: Path) -> None:
    identity = Identity.mint(tmp_path / "pki", "Octopus Tentacle")
    create_default_instance(host)
    imported = import_identity(host, identity)
    assert f"Certificate with thumbprint {identity.thumbprint} imported successfully." in imported
    assert host.ok("show-thumbprint") == identity.thumbprint
    as_json = host.ok("show-thumbprint", "--format=json")
    assert as_json == f'{{"Thumbprint":"{identity.thumbprint}"}}'
    exported = host.root / "thumbprint.txt"
    assert host.ok("show-thumbprint", "--export-file", str(exported)) == ""
    assert exported.read_text() == identity.thumbprint


def test_base64_import_and_new_certificate_export_agree(host: Host) -> None:
    create_default_instance(host)
    exported = host.root / "tentacle.txt"
    made = host.ok("new-certificate", "-e", str(exported))
    thumbprint = made.splitlines()[1]
    assert host.ok("show-thumbprint") == ""
    host.ok("import-certificate", "--from-base64", exported.read_text())
    assert host.ok("show-thumbprint") == thumbprint
    _, cert = certificates.load_pfx(base64.b64decode(exported.read_text()), None)
    assert certificates.thumbprint(cert) == thumbprint


def test_show_thumbprint_without_a_certificate(host: Host) -> None:
    create_default_instance(host)
    assert host.ok("show-thumbprint") == ""
    assert host.ok("show-thumbprint", "--format", "JSON") == '{"Thumbprint":null}'
    bad = host.run("show-thumbprint", "--format", "xml")
    assert bad.returncode == 1
    assert bad.stderr.strip() == "The format 'xml' is not supported. Try text or json."


def test_if_blank_keeps_the_certificate(host: Host) -> None:
    create_default_instance(host)
    first = host.ok("new-certificate", "--if-blank").splitlines()[1]
    kept = host.ok("new-certificate", "--if-blank")
    assert kept.strip() == "A certificate already exists, no changes will be applied."
    assert host.ok("show-thumbprint") == first


def test_wrong_pfx_password_is_a_controlled_failure(host: Host, tmp_path: Path) -> None:
    identity = Identity.mint(tmp_path / "pki", "Octopus Tentacle")
    create_default_instance(host)
    pfx = host.root / "identity.pfx"
    pfx.write_bytes(certificates.to_pfx(identity.key, identity.cert, PFX_PASSWORD))
    result = host.run("import-certificate", "-f", str(pfx), "--pw", "not-the-password")
    assert result.returncode == 1
    assert "password may be incorrect" in result.stderr
    assert "=" * 79 not in result.stderr
    assert host.ok("show-thumbprint") == ""


def test_certificate_option_errors(host: Host) -> None:
    create_default_instance(host)
    missing = host.run("import-certificate", "--from-file", "/nonexistent/x.pfx")
    assert (missing.returncode, missing.stderr.strip()) == (
        1,
        "Certificate '/nonexistent/x.pfx' was not found.",
    )
    nothing = host.run("import-certificate")
    assert nothing.stderr.strip() == "Please specify the certificate to import."
    both = host.run("new-certificate", "--if-blank", "--export-pfx", str(host.root / "x.pfx"))
    assert both.returncode == 1
    assert "--if-blank and --export-pfx cannot be specified together" in both.stderr


# -- command line, exit codes, instances --


def test_exit_codes_follow_the_real_program(host: Host) -> None:
    create_default_instance(host)
    unknown_option = host.run("configure", "--bogus=1")
    assert unknown_option.returncode == 1
    assert unknown_option.stderr.strip() == "Unrecognized command line arguments: --bogus=1"
    unknown_command = host.run("frobnicate")
    assert unknown_command.returncode == 2
    assert "Command 'frobnicate' is not supported" in unknown_command.stderr
    no_command = host.run()
    assert no_command.returncode == 2
    assert "Usage: Tentacle <command> [<options>]" in no_command.stdout
    command_help = host.run("configure", "--help")
    assert command_help.returncode == 0
    assert "--reset-trust" in command_help.stdout
    bad_value = host.run("configure", "--port", "ten")
    assert bad_value.returncode == 100
    assert bad_value.stderr.splitlines()[0] == "=" * 79


@pytest.mark.parametrize(
    ("damage", "error"),
    [
        (lambda text: "", "There is an error in XML document (0, 0). ---> System.Xml.XmlException: "
         "Root element is missing."),
        (lambda text: text[: len(text) // 2], "---> System.Xml.XmlException: Unexpected end of "
         "file has occurred."),
    ],
    ids=["empty", "half-written"],
)  # fmt: skip
def test_a_damaged_configuration_fails_every_command_until_it_is_replaced(
    host: Host, damage: Callable[[str], str], error: str
) -> None:
    # As the real XmlKeyValueStore: the deserializer's exception escapes (exit 100), and
    # create-instance keeps the file that exists ("already exists") and fails on it too.
    create_default_instance(host)
    host.ok("configure", "--port", "10999")
    host.default_config.write_text(damage(host.default_config.read_text()))
    for command in (["show-configuration"], ["show-thumbprint"], ["configure", "--port", "1"]):
        failed = host.run(*command)
        assert failed.returncode == 100, command
        assert failed.stderr.splitlines()[0] == "=" * 79
        assert error in failed.stderr, failed.stderr
    again = host.run("create-instance", "--config", str(host.default_config))
    assert again.returncode == 100 and "already exists" in again.stdout
    host.default_config.unlink()  # what octoboot's repair does before create-instance
    create_default_instance(host)
    assert json.loads(host.ok("show-configuration"))["Tentacle"]["Services"]["PortNumber"] == 10933


def test_options_are_case_insensitive_and_global_switches_are_accepted(host: Host) -> None:
    create_default_instance(host)
    result = host.run("CONFIGURE", "/PORT:10999", "-noListen=true", "--console", "--nologo")
    assert result.returncode == 0, result.stderr
    assert "Services listen port: 10999" in result.stdout
    assert "Tentacle will not listen on a port" in result.stdout
    assert result.stdout.rstrip().endswith("These changes require a restart of the Tentacle.")
    assert host.settings()["Tentacle.Services.PortNumber"] == "10999"


def test_instances_are_selected_like_the_real_tentacle(host: Host) -> None:
    none_yet = host.run("show-thumbprint")
    assert none_yet.returncode == 1
    assert none_yet.stderr.strip() == (
        "Unable to find default instance of Tentacle. Available instances: ."
    )
    created = host.ok("create-instance", "--instance", "Web App")
    assert "Saving instance: Web App" in created
    again = host.ok("create-instance", "--instance", "Web App")
    assert "already exists" in again
    assert host.run("show-thumbprint", "--instance", "WEB APP").returncode == 0
    assert host.run("show-thumbprint").returncode == 0  # the only instance is the default
    host.ok("create-instance", "--instance", "Second")
    ambiguous = host.run("show-thumbprint")
    assert ambiguous.returncode == 1
    assert "There is more than one instance of Tentacle" in ambiguous.stderr
    assert ambiguous.stderr.strip().endswith("Available instances: Second, Web App.")
    missing = host.run("configure", "--instance", "Nope", "--port", "1")
    assert missing.returncode == 1
    assert "Instance Nope of Tentacle has not been configured on this machine" in missing.stderr
    listed = host.ok("list-instances", "--format", "json")
    assert [i["InstanceName"] for i in json.loads(listed)] == ["Second", "Web App"]
    host.ok("delete-instance", "--instance", "Second")
    assert host.ok("list-instances").startswith("Instance 'Web App' uses configuration ")


def test_version_comes_from_the_archive(host: Host) -> None:
    text = host.ok("version")
    assert text.startswith(f"{DEFAULT_TENTACLE_VERSION}+") and not text.endswith("\n")
    info = json.loads(host.ok("version", "--format", "json"))
    assert info["MajorMinorPatch"] == info["NuGetVersion"] == DEFAULT_TENTACLE_VERSION
    assert info["IsPrerelease"] is False


def test_every_call_is_recorded_before_it_is_parsed(host: Host) -> None:
    host.run("configure", "--no-such-option", "x y")
    host.run("version")
    records = host.recorded_argv()
    assert [r["argv"] for r in records] == [
        [str(host.exe), "configure", "--no-such-option", "x y"],
        [str(host.exe), "version"],
    ]
    assert all(isinstance(r["pid"], int) and r["time"] for r in records)


# -- faults --


def imported(host: Host, *args: str) -> set[str]:
    """The modules a Tentacle command imports, as `python -X importtime` lists them."""
    python = host.exe.read_text().splitlines()[0].removeprefix("#!").split()[0]
    result = subprocess.run(
        [python, "-X", "importtime", "-S", str(host.exe), *args],
        env=host.env,
        cwd=host.root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.startswith("import time:")]
    assert len(lines) > 1, result.stderr  # a header, then the modules: else nothing is checked
    return {line.rsplit("|", 1)[1].strip() for line in lines[1:]}


def test_the_short_commands_of_a_bootstrap_import_no_json_re_enum_or_pathlib(
    host: Host, tmp_path: Path
) -> None:
    """Every Tentacle command is a new process on the host: json (with re and enum), pathlib,
    collections and subprocess were most of a short command's CPU (docs/performance.md).
    With the control files as the sandbox writes them, the commands octoboot runs on every
    machine (tentacle.py) do without them."""
    write_faults(host, install_seconds=0.0)
    write_latency(host, 0.0)
    config = str(host.config_root / "Tentacle" / "tentacle-Tentacle.config")
    heavy = {"json", "re", "enum", "pathlib", "collections", "ipaddress", "typing", "subprocess"}
    identity = Identity.mint(tmp_path / "pki", "Octopus Tentacle")
    pfx = tmp_path / "identity.pfx"
    pfx.write_bytes(certificates.to_pfx(identity.key, identity.cert, None))
    commands = [
        ("version",),
        ("create-instance", "--instance", "Tentacle", "--config", config),
        ("configure", "--instance", "Tentacle", "--port", "10933", "--noListen", "False",
         "--app", str(host.root / "Applications"), "--reset-trust", "--trust", "AB" * 20),
        ("show-configuration", "--instance", "Tentacle"),
        ("import-certificate", "--instance", "Tentacle", "--from-file", str(pfx)),
        ("service", "--instance", "Tentacle", "--install"),  # systemctl daemon-reload, enable
    ]  # fmt: skip
    for args in commands:
        assert not imported(host, *args) & heavy, args
    shown = json.loads(host.ok("show-configuration", "--instance", "Tentacle"))
    assert shown["Tentacle"]["Communication"]["TrustedOctopusServers"][0]["Thumbprint"] == "AB" * 20
    assert shown["Tentacle"]["CertificateThumbprint"] == identity.thumbprint
    assert (host.systemd_dir / UNIT).exists()
    assert host.recorded_argv()[-1]["argv"][1:] == ["show-configuration", "--instance", "Tentacle"]


def write_faults(host: Host, **faults: object) -> None:
    host.control_dir.mkdir(parents=True, exist_ok=True)
    (host.control_dir / "faults.json").write_text(json.dumps(faults))


def write_latency(host: Host, startup_seconds: float) -> None:
    host.control_dir.mkdir(parents=True, exist_ok=True)
    (host.control_dir / "latency.json").write_text(json.dumps({"startup_seconds": startup_seconds}))


def test_first_run_takes_the_install_time_once(host: Host) -> None:
    write_faults(host, install_seconds=1.0)
    started = time.monotonic()
    host.ok("version")
    assert time.monotonic() - started >= 1.0
    assert (host.exe.parent / ".first-run-complete").exists()
    started = time.monotonic()
    host.ok("version")
    assert time.monotonic() - started < 1.0


def test_every_command_first_sleeps_a_net_start_up(host: Host) -> None:
    host.ok("version")  # the install's first run, out of the way
    host.control_dir.mkdir(parents=True, exist_ok=True)
    write_latency(host, 0.5)
    before, started = os.times(), time.monotonic()
    host.ok("version")
    host.ok("help")
    took, after = time.monotonic() - started, os.times()
    cpu = sum(after[2:4]) - sum(before[2:4])  # the commands' (children's) user + system
    assert took >= 1.0  # each command waits for its start-up...
    assert cpu < took / 2, (cpu, took)  # ...asleep: a latency, not CPU the host spends


def test_failed_install_fails_until_it_is_fixed(host: Host) -> None:
    write_faults(host, install_fails=True)
    for _ in range(2):
        failed = host.run("version")
        assert failed.returncode == 100
        assert "Failed to extract the bundled .NET runtime" in failed.stderr
        assert not (host.exe.parent / ".first-run-complete").exists()
    (host.control_dir / "faults.json").unlink()
    assert host.ok("version").startswith(DEFAULT_TENTACLE_VERSION)


def test_hang_blocks_the_named_command_until_it_is_killed(host: Host) -> None:
    create_default_instance(host)
    write_faults(host, hang=["show-thumbprint"])
    hung = subprocess.Popen(
        [str(host.exe), "show-thumbprint"],
        env=host.env,
        cwd=host.root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: any(r["pid"] == hung.pid for r in host.recorded_argv()),
            "the hung call to be recorded",
        )
        with pytest.raises(subprocess.TimeoutExpired):
            hung.wait(timeout=1)
        assert host.ok("version")  # other commands are not affected
    finally:
        os.kill(hung.pid, signal.SIGTERM)
        assert hung.wait(timeout=DEADLINE_SECONDS) == -signal.SIGTERM


# -- registration against the Octopus API stand-in --


@pytest.fixture
def octopus(tmp_path: Path) -> Iterator[OctopusStandIn]:
    with OctopusStandIn(tmp_path / "octopus", API_KEY, ["Dev", "Prod"]) as server:
        yield server


def octopus_machines(octopus: OctopusStandIn) -> list[dict]:
    response = httpx.get(
        f"{octopus.url}/api/Spaces-1/machines/all", headers={"X-Octopus-ApiKey": API_KEY}
    )
    response.raise_for_status()
    return response.json()


def register(host: Host, octopus: OctopusStandIn, *extra: str, api_key: str = API_KEY):
    return host.run(
        "register-with",
        "--server",
        octopus.url,
        "--apiKey",
        api_key,
        "--name",
        "web01",
        "--env",
        "Dev",
        "--role",
        "web",
        "--publicHostName",
        "WEB01.example",
        *extra,
    )


@pytest.fixture
def registrable(host: Host) -> Host:
    create_default_instance(host)
    host.ok("new-certificate")
    host.ok("configure", "--port", "10950")
    return host


def test_register_with_creates_a_listening_machine_and_trusts_the_server(
    registrable: Host, octopus: OctopusStandIn
) -> None:
    result = register(registrable, octopus)
    assert result.returncode == 0, result.stderr
    assert "Machine registered successfully" in result.stdout
    [machine] = octopus_machines(octopus)
    assert machine["Name"] == "web01"
    assert machine["Roles"] == ["web"]
    assert machine["EnvironmentIds"] == ["Environments-1"]
    assert machine["Endpoint"]["CommunicationStyle"] == "TentaclePassive"
    assert machine["Endpoint"]["Uri"] == "https://web01.example:10950/"
    assert machine["Endpoint"]["Thumbprint"] == registrable.ok("show-thumbprint")
    trusted = json.loads(registrable.settings()["Tentacle.Communication.TrustedOctopusServers"])
    assert [s["Thumbprint"] for s in trusted] == [octopus.server_thumbprint]


def test_register_again_needs_force_and_force_keeps_the_machine(
    registrable: Host, octopus: OctopusStandIn
) -> None:
    assert register(registrable, octopus).returncode == 0
    [first] = octopus_machines(octopus)
    refused = register(registrable, octopus)
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "A machine named 'web01' already exists in the environment. Use the 'force' parameter "
        "if you intended to update the existing machine."
    )
    forced = register(registrable, octopus, "--force", "--role", "db", "--env", "Prod")
    assert forced.returncode == 0, forced.stderr
    [updated] = octopus_machines(octopus)
    assert updated["Id"] == first["Id"]
    assert updated["Roles"] == ["web", "db"]
    assert updated["EnvironmentIds"] == ["Environments-1", "Environments-2"]


def test_register_failures_map_to_exit_codes(registrable: Host, octopus: OctopusStandIn) -> None:
    wrong_key = register(registrable, octopus, api_key="API-WRONGKEY000000000000000")
    assert wrong_key.returncode == 100
    assert wrong_key.stderr.splitlines()[0] == "=" * 79
    assert "OctopusSecurityException" in wrong_key.stderr
    unknown_env = register(registrable, octopus, "--env", "Nowhere")
    assert unknown_env.returncode == 1
    assert "Could not find the environment with name, slug or Id Nowhere" in unknown_env.stderr
    polling = register(registrable, octopus, "--comms-style", "TentacleActive")
    assert polling.returncode == 1
    assert "not supported by the Tentacle stand-in" in polling.stderr
    assert octopus_machines(octopus) == []


def test_deregister_from_deletes_the_machines_with_its_thumbprint(
    registrable: Host, octopus: OctopusStandIn
) -> None:
    assert register(registrable, octopus).returncode == 0
    assert register(registrable, octopus, "--name", "web01-twin").returncode == 0
    args = ("deregister-from", "--server", octopus.url, "--apiKey", API_KEY)
    several = registrable.run(*args)
    assert several.returncode == 1
    assert "To deregister all of these machines specify the --multiple flag." in several.stderr
    assert len(octopus_machines(octopus)) == 2
    result = registrable.run(*args, "--multiple")
    assert result.returncode == 0, result.stderr
    assert "Deleting machine 'web01' from the Octopus Server..." in result.stdout
    assert "Deleting machine 'web01-twin' from the Octopus Server..." in result.stdout
    assert f"--remove-trust={octopus.server_thumbprint}" in result.stdout
    assert "Machine deregistered successfully" in result.stdout
    assert octopus_machines(octopus) == []
    again = registrable.run(*args)
    assert again.returncode == 1
    assert again.stderr.strip() == "No machine was found matching this Tentacle's thumbprint."
