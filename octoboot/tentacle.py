"""What to run on a host, and how to read what it printed. Pure functions: no SSH here.

Every builder returns one POSIX shell command line with every value quoted by shlex, so a
machine name, role or path can never break out of it. No builder takes a secret: the API
key stays on the controller (registration is done over the REST API, not with
`register-with`), and the identity reaches the host as a password-less PFX on the
command's standard input, and is a file only on a tmpfs private to the import (see
docs/design.md, "Identity: the transient copy").

A change that the running service has not seen yet (new certificate, settings, version) is
marked on the host by a file that only a successful (re)start removes, so a run that fails
between the change and the restart does not leave the restart forgotten.
"""

from __future__ import annotations

import html
import json
import re
import shlex
from dataclasses import dataclass, field, replace

INSTALL_ROOT = "/opt/octopus"
EXECUTABLE = f"{INSTALL_ROOT}/tentacle/Tentacle"
# Where the PFX is a file for the import: a tmpfs (see import_identity_command).
_SHM = "/dev/shm"
_TRANSIENT_PREFIX = "octoboot-"
_MARK = "@@octoboot:"


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


# How long what a remote command left running has between SIGTERM and SIGKILL.
GRACE_SECONDS = 2.0

# The host side of every remote command (see docs/design.md, "Remote commands end with their
# session"). $1: seconds, $2: the command, $3: "1" when one line of input comes first on stdin,
# $4: the grace in tenths of a second. The command runs under `timeout`, in the process group
# `timeout` makes for itself and the command (no `setsid` in front: one exec more per command
# for a session nobody needs); the SSH channel's stdin stays with this script, and its end
# (the controller said stop, or the connection is gone) ends that whole group: SIGTERM, then
# SIGKILL after the grace. The group is ended the same way when the command returns, so
# nothing it started outlives it; at the deadline `timeout` signals the group itself.
_SUPERVISOR = """\
exec 3<&0 </dev/null
grace=$4
end() {
  kill -TERM -"$g" 2>/dev/null || return 0
  i=0
  while kill -0 -"$g" 2>/dev/null && [ "$i" -lt "$grace" ]; do i=$((i + 1)); sleep 0.1; done
  kill -KILL -"$g" 2>/dev/null
  return 0
}
if [ "$3" = 1 ]; then
  IFS= read -r line <&3 || exit 130
  printf '%s\\n' "$line" | timeout -k 5 "$1" sh -c "$2" &
  unset line
else
  timeout -k 5 "$1" sh -c "$2" &
fi
g=$!
{ while read -r _; do :; done; end; } <&3 &
w=$!
exec 3<&-
wait "$g"
rc=$?
end
kill "$w" 2>/dev/null
exit "$rc"
"""


def supervised(
    command: str, seconds: float, *, stdin_line: bool = False, grace: float = GRACE_SECONDS
) -> str:
    """Run command on the host bounded by seconds (exit 124 when they ran out), in a process
    group of its own that ends with the SSH session, whatever ends it: the command's return,
    the deadline, the controller's EOF on stdin, or the connection dropping. stdin_line: the
    first line sent on stdin is the command's whole input (it gets end-of-input after it);
    otherwise the command's stdin is empty. grace: the seconds between SIGTERM and SIGKILL
    when the group is ended."""
    limit = str(max(1, int(seconds)))
    line = "1" if stdin_line else ""
    tenths = str(round(grace * 10))
    return shlex.join(["sh", "-c", _SUPERVISOR, "octoboot", limit, command, line, tenths])


# --- probe -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PollingProxySettings:
    """A polling Tentacle's own proxy as its configuration keeps it (`Octopus.Server.Proxy.*`,
    octopus-facts §6.4); the defaults are the Tentacle's for keys it has not written."""

    host: str | None = None  # None: no proxy of its own
    port: int = 80
    username: str = ""
    use_default: bool = True  # the system's default proxy, when it has no host

    def __str__(self) -> str:
        if self.host is not None:
            who = f" as {self.username}" if self.username else ""
            return f"{self.host}:{self.port}{who}"
        return "the system's default" if self.use_default else "none"


# What the probe reads of a polling Tentacle's proxy: never the password.
_PROXY_KEYS = ("ProxyHost", "ProxyPort", "ProxyUsername", "UseDefaultProxy")
_PROXY_SETTING = re.compile(r'<set key="Octopus\.Server\.Proxy\.(\w+)"\s*(?:/>|>(.*?)</set>)')


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
    # Polling: the server address the Tentacle polls (https://host:port/) and its
    # subscription id (poll://<id>/), from its trusted-server entry of style TentacleActive.
    polling_address: str | None = None
    subscription: str | None = None
    # Read from the configuration file: show-configuration does not show it (§6.4).
    polling_proxy: PollingProxySettings = PollingProxySettings()


def _instance_index(instance: str) -> str:
    """The machine-wide index entry that names the instance's configuration file
    (octopus-facts §1: JSON {Name, ConfigurationFilePath})."""
    return f"/etc/octopus/Tentacle/Instances/{instance.replace(' ', '-').lower()}.config"


def _polling_proxy_lines(instance: str) -> str:
    """The instance's `Octopus.Server.Proxy.*` settings from its configuration file (the
    index's path, else the one octoboot creates), the password left out."""
    index = shlex.quote(_instance_index(instance))
    keys = "|".join(_PROXY_KEYS)
    return (
        f'c=$(sed -n \'s/.*"ConfigurationFilePath" *: *"\\([^"]*\\)".*/\\1/p\' {index} '
        f'2>/dev/null); [ -n "$c" ] || c={shlex.quote(configuration_file(instance))}; '
        f'grep -E \'<set key="Octopus\\.Server\\.Proxy\\.({keys})"\' "$c" 2>/dev/null'
    )


def probe_command(instance: str, *, clean: bool = True) -> str:
    """One round trip: install state, version, the instance's settings, the service.
    clean: also remove octoboot uploads older than 5 minutes that a lost connection left
    (not in a dry run, which changes nothing). Whatever `clean` says, a transient copy of a
    private key that an import killed outright left behind is removed at once (its command's
    PID is gone), and so is one that earlier versions of octoboot left in /tmp: no run leaves
    a private key lying on a host because it only meant to look."""
    unit = shlex.quote(unit_name(instance))
    t = shlex.quote(EXECUTABLE)
    show = _tentacle("show-configuration", "--instance", instance)
    cleanup = "find /tmp -maxdepth 1 -name 'octoboot-*' -mmin +5 -exec rm -rf {} + 2>/dev/null"
    leftover_keys = (
        f'for d in {_SHM}/{_TRANSIENT_PREFIX}*; do [ -d "$d" ] || continue; '
        f'p=${{d#{_SHM}/{_TRANSIENT_PREFIX}}}; kill -0 "${{p%%-*}}" 2>/dev/null || rm -rf "$d"; '
        "done; "
        'for f in /tmp/octoboot-*/identity.pfx; do [ -e "$f" ] && rm -rf "${f%/*}"; done'
    )
    return "; ".join(
        [
            leftover_keys,
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
            f"echo; echo '{_MARK}polling-proxy'",
            _polling_proxy_lines(instance),
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
    return Probe(
        installed=True,
        version=sections.get("version", "").split("+")[0] or None,
        service_enabled=bool(service) and service[0] == "enabled",
        service_active="active" in service[1:],
        restart_pending=sections.get("restart") == "pending",
        configuration_error=_configuration_error(sections.get("configuration-status", "")),
        problems=problems,
        polling_proxy=parse_polling_proxy(sections.get("polling-proxy", "")),
        **_instance_settings(settings),
    )


def parse_polling_proxy(text: str) -> PollingProxySettings:
    """The proxy settings from `<set key="Octopus.Server.Proxy.X">value</set>` lines."""
    values = {key: html.unescape(value or "") for key, value in _PROXY_SETTING.findall(text)}
    port = _int_or_none(values.get("ProxyPort"))
    use_default = _bool_or_none(values.get("UseDefaultProxy"))
    return PollingProxySettings(
        host=values.get("ProxyHost") or None,
        port=80 if port is None else port,
        username=values.get("ProxyUsername", ""),
        use_default=True if use_default is None else use_default,
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


def reconfigured(probe: Probe, stdout: str) -> Probe:
    """The probe after a configure command, with the settings its show-configuration
    printed (a polling Tentacle's new subscription id among them)."""
    settings, problems = _parse_configuration(_sections(stdout).get("configuration", ""))
    if problems or not settings:
        raise ValueError(f"the configuration could not be read back: {problems or 'empty'}")
    return replace(probe, restart_pending=True, **_instance_settings(settings))


def _instance_settings(settings: dict) -> dict:
    tentacle = settings.get("Tentacle", {})
    services = tentacle.get("Services", {})
    trusted = tentacle.get("Communication", {}).get("TrustedOctopusServers") or []
    thumbprint = tentacle.get("CertificateThumbprint") or None
    # Newtonsoft writes the style as its number (TentacleActive = 2); a name is read too.
    polling = [s for s in trusted if s.get("CommunicationStyle") in (2, "TentacleActive")]
    return {
        "instance_exists": bool(settings),
        "thumbprint": thumbprint.upper() if thumbprint else None,
        "port": _int_or_none(services.get("PortNumber")),
        "no_listen": _bool_or_none(services.get("NoListen")),
        "app_dir": tentacle.get("Deployment", {}).get("ApplicationDirectory"),
        "trusted": tuple(sorted({str(s.get("Thumbprint", "")).upper() for s in trusted})),
        "polling_address": (polling[0].get("Address") or None) if polling else None,
        "subscription": (polling[0].get("SubscriptionId") or None) if polling else None,
    }


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
    if not isinstance(value, str | int | float):
        return None
    try:
        return int(value)
    except ValueError:
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
            "trap 'exit 1' HUP INT TERM PIPE",
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
            "trap 'exit 1' HUP INT TERM PIPE",
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
    standard input (docs/design.md, "Identity: the transient copy"). The PFX is a file only
    for the import, never on a disk: on a tmpfs mounted in a mount namespace of the command's
    own, which no other process sees and the kernel frees when the command's last process
    ends, whatever ends it. A host that cannot make one (a container without CAP_SYS_ADMIN)
    gets it in a 0700 folder on its shared /dev/shm instead, removed on every way out the
    command sees; one killed outright leaves the folder for the next probe to remove
    (`probe_command`: the folder is named after the command's PID). replace_configuration:
    the instance's configuration file is damaged (unreadable); it is removed first, as
    create-instance keeps a file that exists and fails on it."""
    steps = [
        "set -e",
        "umask 077",
        # $0: private when this runs in a mount namespace of its own.
        f'if [ "$0" = private ] && mount -t tmpfs -o size=4m,mode=0700 octoboot {_SHM} '
        "2>/dev/null; then echo 'transient copy: on a private tmpfs'; "
        f"else echo 'transient copy: on {_SHM} (this host makes no private mounts)'; fi",
        f"d=$(mktemp -d {_SHM}/{_TRANSIENT_PREFIX}$$-XXXXXXXX)",
        # The removal itself is not to be cut short by the signals that end the command.
        'trap \'trap "" HUP INT TERM; rm -rf "$d"\' EXIT',
        # PIPE too: once the session is gone, the shell's own "Terminated" on stderr would
        # kill it before its EXIT trap ran.
        "trap 'exit 1' HUP INT TERM PIPE",
        'base64 -d > "$d/identity.pfx"',
    ]
    config = configuration_file(instance)
    if replace_configuration:
        steps.append(f"rm -f {shlex.quote(config)}")
    # Each Tentacle command runs in the background and is waited for: a shell runs its
    # traps only once its foreground command has returned, but interrupts `wait` at once,
    # so the copy goes when the command's group is told to end, not only once a hung
    # Tentacle has died of it (the supervisor's SIGKILL follows a short grace).
    if create_instance or replace_configuration:
        steps.append(
            _tentacle("create-instance", "--instance", instance, "--config", config) + " & wait $!"
        )
    steps += [
        _tentacle("import-certificate", "--instance", instance, "--from-file")
        + ' "$d/identity.pfx" & wait $!',
        _mark_restart(instance),
    ]
    private = "unshare --mount --propagation private"
    return (
        f"s={shlex.quote('; '.join(steps))}; "
        f'if {private} true 2>/dev/null; then exec {private} sh -c "$s" private; fi; '
        'exec sh -c "$s" shared'
    )


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


def configure_polling_command(
    instance: str, *, app_dir: str, server_thumbprint: str, server_host: str, server_port: int
) -> str:
    """Polling: no listening port, trust in exactly one server, and poll it
    (`server-comms`, which keeps the subscription id the instance has for that server, else
    makes a new poll://<id>/; --reset-trust has just removed the old one). Prints the
    configuration afterwards, so the caller reads the subscription id back in the same
    round trip. No API key: the record is written from the controller
    (docs/polling-and-workers.md)."""
    configure = _tentacle(
        "configure",
        "--instance", instance,
        "--noListen", "True",
        "--app", app_dir,
        "--reset-trust",
        "--trust", server_thumbprint,
    )  # fmt: skip
    server_comms = _tentacle(
        "server-comms",
        "--instance", instance,
        "--thumbprint", server_thumbprint,
        "--style", "TentacleActive",
        "--host", server_host,
        "--port", str(server_port),
    )  # fmt: skip
    show = _tentacle("show-configuration", "--instance", instance)
    return (
        f"{configure} && {server_comms} && {_mark_restart(instance)} && "
        f"echo; echo '{_MARK}configuration' && {show}"
    )


def service_command(
    instance: str, action: str, *, port: int | None, wait_seconds: float = 30
) -> str:
    """install+start, restart or start the service, then wait until systemd says active and
    the port is listening (`service --start` exits 0 even when the start failed:
    octopus-facts §1.3; and a health check that comes before the listener would fail for
    nothing). port None: a polling Tentacle, which listens on no port."""
    flags = {"install": ["--install", "--start"], "restart": ["--restart"], "start": ["--start"]}
    unit = shlex.quote(unit_name(instance))
    tries = max(1, int(wait_seconds / 0.2))
    # A listening Tentacle: LISTEN sockets on the port, from /proc (no ss/netstat needed):
    # "...:<PORT hex> ... 0A"; looked at first: it is what is missing while the service
    # starts, and a grep costs the host less than a systemctl (the sandbox's is a Python
    # program).
    ready = f"systemctl is-active --quiet {unit}"
    what = "become active"
    if port is not None:
        listening = f"grep -q ':{port:04X} [0-9A-F]*:0000 0A' /proc/net/tcp /proc/net/tcp6"
        ready = f"{listening} && {ready}"
        what = f"start listening on port {port}"
    return (
        f"{_tentacle('service', '--instance', instance, *flags[action])} || exit $?; "
        f"i=0; until {ready}; do "
        f'i=$((i+1)); if [ "$i" -ge {tries} ]; then '
        f"echo 'the service did not {what}' >&2; exit 1; fi; "
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


# --- a polling Tentacle's own proxy ----------------------------------------------------------


def polling_proxy_arguments(
    instance: str, host: str | None, port: int = 80, username: str | None = None
) -> list[str]:
    """`Tentacle polling-proxy` for the instance: through host:port (as username, if any), or,
    with no host, no proxy at all (octopus-facts §6.4). Never a password: the Tentacle takes
    one only as --proxyPassword on its command line, where any user of the host could read
    it, so the inventory refuses one and this leaves whatever the host has alone."""
    if host is None:
        return ["polling-proxy", "--instance", instance, "--proxyEnable", "false"]
    return [
        "polling-proxy",
        "--instance", instance,
        "--proxyEnable", "true",
        "--proxyHost", host,
        "--proxyPort", str(port),
        "--proxyUsername", username or "",
    ]  # fmt: skip


def polling_proxy_command(
    instance: str, host: str | None, port: int = 80, username: str | None = None
) -> str:
    """polling_proxy_arguments as one command line; the service reads the proxy when it
    starts, so a restart is marked due. The configure step of a polling machine runs it
    when `drift.polling_proxy_drift` finds the host's proxy is not the inventory's."""
    arguments = polling_proxy_arguments(instance, host, port, username)
    return f"{_tentacle(*arguments)} && {_mark_restart(instance)}"
