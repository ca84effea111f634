"""`service`: the systemd unit of an instance, after ServiceCommand and LinuxServiceConfigurator.

On Linux, in one call: restart, stop, uninstall, install, reconfigure, start. A failed start or
stop is only logged (exit code 0); install and uninstall failures are errors. systemctl is
whatever `systemctl` is first on PATH (the sandbox puts its stand-in there).
"""

from __future__ import annotations

import os

from . import instances, paths, spawn
from .command import EXECUTABLE, Command, Invocation
from .failures import ControlledFailure
from .log import Log
from .options import Option

DESCRIPTION = "Octopus Deploy: Tentacle deployment agent"
# ServiceName.GetWindowsServiceName for an instance known only by its config file.
UNNAMED_SERVICE = "OctopusDeploy Tentacle"
_SYSTEMCTL_TIMEOUT = 120


def systemd_dir() -> str:
    return os.environ.get("OCTOBOOT_SANDBOX_SYSTEMD_DIR") or "/etc/systemd/system"


def unit_name(name: str) -> str:
    """re.sub(r"\\s+", "-", name) once "/" is taken out, written out (re: see options._split)."""
    out: list[str] = []
    in_space = False
    for char in name.replace("/", ""):
        if not char.isspace():
            out.append(char)
        elif not in_space:
            out.append("-")
        in_space = char.isspace()
    return "".join(out)


def unit_file_text(instance: instances.Instance, user: str, depend_on: str | None) -> str:
    after = " ".join(["network.target", *([depend_on] if depend_on and depend_on.strip() else [])])
    target = f"--instance={instance.name}" if instance.name else f"--config={instance.config_path}"
    return (
        f"[Unit]\nDescription={DESCRIPTION}\nAfter={after}\n\n"
        f"[Service]\nType=simple\nUser={user}\n"
        f"ExecStart={EXECUTABLE} run {target} --noninteractive\nRestart=always\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )


def _systemctl(verb: str, unit: str, log: Log, *, as_error: bool = False) -> bool:
    code, _, stderr = spawn.run(["systemctl", verb, unit], timeout=_SYSTEMCTL_TIMEOUT)
    if code == 0:
        return True
    report = log.error if as_error else log.warn
    report(f"The command 'systemctl {verb} {unit}' failed with exit code: {code}")
    for line in stderr.decode().splitlines():
        report(line)
    return False


def _on_path(program: str) -> bool:
    """shutil.which(program) is not None, without shutil's imports (zlib, bz2, lzma)."""
    for folder in os.get_exec_path():
        path = os.path.join(folder, program)
        if os.access(path, os.F_OK | os.X_OK) and not os.path.isdir(path):
            return True
    return False


def _check_prerequisites() -> None:
    if not os.path.exists("/bin/bash"):
        raise ControlledFailure("Could not detect bash. bash is required to run tentacle.")
    # The real command runs `sudo -vn`; root needs no sudo (and sandbox hosts have none).
    if os.geteuid() != 0 and _sudo_refuses():
        raise ControlledFailure("Requires elevated privileges. Please run command as sudo.")
    if not _on_path("systemctl"):
        raise ControlledFailure(
            "Could not detect systemd. systemd is required to run Tentacle as a service"
        )


def _sudo_refuses() -> bool:
    import subprocess  # not as root, which sandbox hosts are: the terminal is sudo's

    return subprocess.run(["sudo", "-vn"], check=False).returncode != 0


def _configure_service(instance: instances.Instance, inv: Invocation) -> None:
    p, log = inv.parsed, inv.log
    _check_prerequisites()
    unit = unit_name(instance.name or UNNAMED_SERVICE)
    unit_file = paths.join(systemd_dir(), f"{unit}.service")
    if p.flag("restart"):
        log.info(f"Restarting service: {unit}")
        if _systemctl("restart", unit, log):
            log.info("Service has been restarted")
        else:
            log.error("The service could not be restarted")
    if p.flag("stop"):
        log.info(f"Stopping service: {unit}")
        if _systemctl("stop", unit, log):
            log.info("Service stopped")
        else:
            log.error("The service could not be stopped")
    if p.flag("uninstall"):
        log.info(f"Removing systemd service: {unit}")
        _remove_unit(unit, unit_file, log)
        log.info("Service uninstalled")
    user = p.value("username") or os.environ.get("OCTOPUS_SERVICE_USERNAME") or "root"
    text = unit_file_text(instance, user, p.value("dependOn"))
    if p.flag("install"):
        _write_unit(unit, unit_file, text, log)
    if p.flag("reconfigure"):
        log.info(f"Attempting to remove old service: {unit}")
        _remove_unit(unit, unit_file, log)
        _write_unit(unit, unit_file, text, log)
    if p.flag("start"):
        if _systemctl("start", unit, log, as_error=True):
            log.info(f"Service started: {unit}")
        else:
            log.error(f"Could not start the systemd service: {unit}")


def _remove_unit(unit: str, unit_file: str, log: Log) -> None:
    _systemctl("stop", unit, log)
    _systemctl("disable", unit, log)
    try:  # noqa: SIM105 (contextlib is a whole module's import for this one call)
        os.unlink(unit_file)
    except FileNotFoundError:
        pass


def _write_unit(unit: str, unit_file: str, text: str, log: Log) -> None:
    os.makedirs(paths.parent(unit_file), exist_ok=True)
    with open(unit_file, "w", encoding="utf-8") as file:
        file.write(text)
    os.chmod(unit_file, 0o644)
    # The real command only enables; a reload first is what systemd expects after a new unit.
    _systemctl("daemon-reload", unit, log, as_error=True)
    _systemctl("enable", unit, log, as_error=True)
    log.info(f"Service installed: {unit}")


def _service(inv: Invocation) -> None:
    p = inv.parsed
    if p.value("instance") == "*":
        if p.flag("reconfigure") or p.flag("install") or p.flag("uninstall"):
            raise ControlledFailure(
                "--instance=* can only be used for --start, --stop, and --restart flags"
            )
        for instance in instances.list_instances():
            _configure_service(instance, inv)
        return
    instance = instances.select(p.value("instance"), None)
    if instance.name is None and (p.flag("install") or p.flag("reconfigure")):
        inv.log.warn(
            "Please note, currently there can only be one un-named instance configured as a "
            "service on a machine at a time."
        )
    inv.log.write_to(instance.settings().home_dir)
    _configure_service(instance, inv)


COMMANDS = (
    Command(
        "service",
        "Start, stop, install and configure the Tentacle service",
        _service,
        (
            Option("start", "Start the service if it is not already running"),
            Option("stop", "Stop the service if it is running"),
            Option("restart", "Restart the service if it is running"),
            Option("reconfigure", "Reconfigure the service"),
            Option("install", "Install the service"),
            Option(
                "username=|user=",
                "Username to run the service under (DOMAIN\\Username format for Windows). Only "
                "used when --install or --reconfigure are used. Can also be passed via an "
                "environment variable OCTOPUS_SERVICE_USERNAME. Defaults to 'root' for Systemd "
                "services.",
            ),
            Option("uninstall", "Uninstall the service"),
            Option(
                "password=",
                "Password for the username specified with --username. Only used when --install "
                "or --reconfigure are used. Can also be passed via an environment variable "
                "OCTOPUS_SERVICE_PASSWORD.",
            ),
            Option("dependOn=", ""),
            Option("instance=", "Name of the instance to use, or * to use all instances"),
        ),
        standard=False,
    ),
)
