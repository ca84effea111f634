"""What to run on a host, and how to read what it printed. Pure functions: no SSH here.

Every builder returns one POSIX shell command line with every value quoted by shlex, so a
machine name, role or path can never break out of it. No builder takes a secret: the API
key stays on the controller (registration is done over the REST API, not with
`register-with`), and the identity reaches the host as a password-less PFX on the
command's standard input, written into a root-only temporary folder that the same command
removes (see docs/design.md, "Identity").

A change that the running service has not seen yet (new certificate, settings, version) is
marked on the host by a file that only a successful (re)start removes, so a run that fails
between the change and the restart does not leave the restart forgotten.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field, replace

INSTALL_ROOT = "/opt/octopus"
EXECUTABLE = f"{INSTALL_ROOT}/tentacle/Tentacle"
_MARK = "@@octoboot:"
_THUMBPRINT = re.compile(r"^[0-9A-F]{40}$")


def unit_name(instance: str) -> str:
    """The systemd unit `service --install` writes for an instance (octopus-facts §1.1)."""
    return re.sub(r"\s", "-", instance.replace("/", "")) + ".service"


def configuration_file(instance: str) -> str:
    """Where octoboot creates an instance's configuration (the packaged wizard's place)."""
    return f"/etc/octopus/{instance}/tentacle-{instance}.config"


def restart_marker(instance: str) -> str:
    return f"/etc/octopus/{instance}/.octoboot-restart-pending"


def _mark_restart(instance: str) -> str:
    marker = restart_marker(instance)
    return f"mkdir -p {shlex.quote(marker.rsplit('/', 1)[0])} && touch {shlex.quote(marker)}"


def _tentacle(*args: str) -> str:
    return shlex.join([EXECUTABLE, *args])


def as_root(command: str, *, sudo: bool) -> str:
    """Run command as root: as is for root logins, through `sudo -n sh -c` otherwise."""
    return shlex.join(["sudo", "-n", "sh", "-c", command]) if sudo else command


def with_deadline(command: str, seconds: float) -> str:
    """Bound command on the host itself, so a hung command dies there too, not only our
    wait for it: `timeout` signals the whole process group, then SIGKILLs it 5 s later."""
    limit = max(1, int(seconds))
    return f"timeout -k 5 {limit} sh -c {shlex.quote(command)}"


def without_input(command: str) -> str:
    """command with an empty stdin: one that reads it gets end-of-input at once, instead of
    waiting on the SSH channel until the deadline."""
    return f"exec </dev/null\n{command}"


# --- probe -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """What is on the host now."""

    installed: bool
    version: str | None = None
    instance_exists: bool = False
    thumbprint: str | None = None
    port: int | None = None
    no_listen: bool | None = None
    app_dir: str | None = None
    trusted: tuple[str, ...] = ()
    service_enabled: bool = False
    service_active: bool = False
    restart_pending: bool = False
    # show-configuration failed unexpectedly: the configuration file cannot be read (empty,
    # half-written); what the Tentacle said.
    configuration_error: str | None = None
    problems: tuple[str, ...] = field(default=())


def probe_command(instance: str, *, clean: bool = True) -> str:
    """One round trip: install state, version, the instance's settings, the service.
    clean: also remove octoboot uploads older than 5 minutes that a lost connection left
    (not in a dry run, which changes nothing)."""
    unit = shlex.quote(unit_name(instance))
    t = shlex.quote(EXECUTABLE)
    show = _tentacle("show-configuration", "--instance", instance)
    cleanup = "find /tmp -maxdepth 1 -name 'octoboot-*' -mmin +5 -exec rm -rf {} + 2>/dev/null"
    return "; ".join(
        [
            *([cleanup] if clean else []),
            f"echo '{_MARK}installed'",
            f"if [ -x {t} ]; then echo yes; else echo no; fi",
            f"echo '{_MARK}version'",
            f"[ -x {t} ] && {t} version 2>/dev/null",
            f"echo; echo '{_MARK}configuration'",
            # Its output stays in this section; its stderr and exit code go to the next one.
            f'[ -x {t} ] && {{ e=$({{ {show} 2>&1 1>&3 3>&-; echo "exit $?"; }}); }} 3>&1',
            f"echo; echo '{_MARK}configuration-status'",
            "printf '%s\\n' \"$e\" | tail -n 4",
            f"echo; echo '{_MARK}service'",
            f"systemctl is-enabled {unit} 2>/dev/null; systemctl is-active {unit} 2>/dev/null",
            f"echo '{_MARK}restart'",
            f"[ -e {shlex.quote(restart_marker(instance))} ] && echo pending",
            "true",
        ]
    )


def with_version(probe: Probe, version: str | None, *, restart_pending: bool = False) -> Probe:
    """The probe as it is after a step changed the host (installed, or a restart due)."""
    return replace(
        probe,
        installed=True,
        version=version,
        restart_pending=probe.restart_pending or restart_pending,
    )


def _sections(stdout: str) -> dict[str, str]:
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in stdout.splitlines():
        if line.startswith(_MARK):
            current = sections.setdefault(line[len(_MARK) :].strip(), [])
        elif current is not None:
            current.append(line)
    return {name: "\n".join(lines).strip() for name, lines in sections.items()}


def parse_probe(stdout: str) -> Probe:
    sections = _sections(stdout)
    if sections.get("installed") != "yes":
        return Probe(installed=False)
    service = sections.get("service", "").split()
    settings, problems = _parse_configuration(sections.get("configuration", ""))
    tentacle = settings.get("Tentacle", {})
    services = tentacle.get("Services", {})
    trusted = tentacle.get("Communication", {}).get("TrustedOctopusServers") or []
    thumbprint = tentacle.get("CertificateThumbprint") or None
    return Probe(
        installed=True,
        version=sections.get("version", "").split("+")[0] or None,
        instance_exists=bool(settings),
        thumbprint=thumbprint.upper() if thumbprint else None,
        port=_int_or_none(services.get("PortNumber")),
        no_listen=_bool_or_none(services.get("NoListen")),
        app_dir=tentacle.get("Deployment", {}).get("ApplicationDirectory"),
        trusted=tuple(sorted(str(s.get("Thumbprint", "")).upper() for s in trusted)),
        service_enabled=bool(service) and service[0] == "enabled",
        service_active="active" in service[1:],
        restart_pending=sections.get("restart") == "pending",
        configuration_error=_configuration_error(sections.get("configuration-status", "")),
        problems=problems,
    )


def _configuration_error(status: str) -> str | None:
    """What show-configuration said when it failed unexpectedly. Exit 1 is a controlled
    failure (no such instance, or its file is gone), which create-instance mends; anything
    else (100) means the configuration file could not be read (octopus-facts §1.6)."""
    *lines, last = status.splitlines() or ["exit 0"]
    code = last.removeprefix("exit ").strip()
    if code in ("0", "1"):
        return None
    said = [line.strip() for line in lines if line.strip() and set(line.strip()) != {"="}]
    return said[-1] if said else f"show-configuration failed ({last.strip()})"


def _parse_configuration(text: str) -> tuple[dict, tuple[str, ...]]:
    if not text:
        return {}, ()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return {}, (f"unreadable show-configuration output: {text[:80]!r}",)
    return (data, ()) if isinstance(data, dict) else ({}, ("unexpected configuration",))


def _bool_or_none(value: object) -> bool | None:
    if isinstance(value, bool) or value is None:
        return value
    return {"true": True, "false": False}.get(str(value).strip().lower())


def _int_or_none(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


# --- install -----------------------------------------------------------------------------


def install_from_url_command(url: str, *, restart_instance: str | None = None) -> str:
    """Download the archive on the host and unpack it into /opt/octopus; then run it once.
    restart_instance: an instance whose running service must restart onto the new version."""
    q = shlex.quote(url)
    return "; ".join(
        [
            "set -e",
            "tmp=$(mktemp -d)",
            "trap 'rm -rf \"$tmp\"' EXIT",
            "trap 'exit 1' HUP INT TERM",
            f'if command -v curl >/dev/null; then curl -fsSL --retry 2 -o "$tmp/t.tgz" {q}; '
            f'else wget -q -O "$tmp/t.tgz" {q}; fi',
            *_unpack('"$tmp/t.tgz"', restart_instance),
        ]
    )


def install_from_file_command(remote_archive: str, *, restart_instance: str | None = None) -> str:
    """Unpack an archive pushed to the host, remove it, then run the Tentacle once."""
    return "; ".join(
        [
            "set -e",
            f"archive={shlex.quote(remote_archive)}",
            "trap 'rm -f \"$archive\"' EXIT",
            "trap 'exit 1' HUP INT TERM",
            *_unpack('"$archive"', restart_instance),
        ]
    )


def _unpack(archive: str, restart_instance: str | None) -> list[str]:
    steps = [f"mkdir -p {INSTALL_ROOT}", f"tar -xzf {archive} -C {INSTALL_ROOT}"]
    if restart_instance:
        steps.append(_mark_restart(restart_instance))
    return [*steps, _tentacle("version")]


# --- identity, configuration, service -----------------------------------------------------


def import_identity_command(
    instance: str, *, create_instance: bool, replace_configuration: bool = False
) -> str:
    """Create the instance if needed and import the PFX that arrives base64-encoded on
    standard input. The PFX exists only as a file in a 0700 folder that this command makes
    and removes on every way out (success, failure, or being killed at the deadline).
    replace_configuration: the instance's configuration file is damaged (unreadable); it is
    removed first, as create-instance keeps a file that exists and fails on it."""
    steps = [
        "set -e",
        "umask 077",
        "d=$(mktemp -d /tmp/octoboot-XXXXXXXX)",
        "trap 'rm -rf \"$d\"' EXIT",
        "trap 'exit 1' HUP INT TERM",
        'base64 -d > "$d/identity.pfx"',
    ]
    config = configuration_file(instance)
    if replace_configuration:
        steps.append(f"rm -f {shlex.quote(config)}")
    if create_instance or replace_configuration:
        steps.append(_tentacle("create-instance", "--instance", instance, "--config", config))
    steps += [
        _tentacle("import-certificate", "--instance", instance, "--from-file")
        + ' "$d/identity.pfx"',
        _mark_restart(instance),
    ]
    return "; ".join(steps)


def configure_command(instance: str, *, port: int, app_dir: str, server_thumbprint: str) -> str:
    """Listening mode on port, app dir, and trust in exactly one server (octopus-facts §1.3:
    --reset-trust is applied before --trust within one call)."""
    configure = _tentacle(
        "configure",
        "--instance", instance,
        "--port", str(port),
        "--noListen", "False",
        "--app", app_dir,
        "--reset-trust",
        "--trust", server_thumbprint,
    )  # fmt: skip
    return f"{configure} && {_mark_restart(instance)}"


def service_command(instance: str, action: str, *, port: int, wait_seconds: float = 30) -> str:
    """install+start, restart or start the service, then wait until systemd says active and
    the port is listening (`service --start` exits 0 even when the start failed:
    octopus-facts §1.3; and a health check that comes before the listener would fail for
    nothing)."""
    flags = {"install": ["--install", "--start"], "restart": ["--restart"], "start": ["--start"]}
    unit = shlex.quote(unit_name(instance))
    tries = max(1, int(wait_seconds / 0.2))
    # LISTEN sockets on the port, from /proc (no ss/netstat needed): "...:<PORT hex> ... 0A";
    # looked at first: it is what is missing while the service starts, and a grep costs
    # the host less than a systemctl (the sandbox's is a Python program).
    listening = f"grep -q ':{port:04X} [0-9A-F]*:0000 0A' /proc/net/tcp /proc/net/tcp6"
    return (
        f"{_tentacle('service', '--instance', instance, *flags[action])} || exit $?; "
        f"i=0; until {listening} && systemctl is-active --quiet {unit}; do "
        f'i=$((i+1)); if [ "$i" -ge {tries} ]; then '
        f"echo 'the service did not start listening on port {port}' >&2; exit 1; fi; "
        "sleep 0.2; done; "
        f"rm -f {shlex.quote(restart_marker(instance))}"
    )


def uninstall_command(instance: str, *, service_installed: bool) -> str:
    """Stop and remove the service, delete the instance, and remove its configuration folder,
    which holds the certificate's private key (octopus-facts §1.5)."""
    steps = []
    if service_installed:
        steps.append(_tentacle("service", "--instance", instance, "--stop", "--uninstall"))
    steps += [
        _tentacle("delete-instance", "--instance", instance),
        f"rm -rf {shlex.quote(f'/etc/octopus/{instance}')}",
    ]
    return " && ".join(steps)


def is_thumbprint(value: str) -> bool:
    return bool(_THUMBPRINT.match(value))
