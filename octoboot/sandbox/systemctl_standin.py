"""A systemctl stand-in for sandbox hosts, which run no systemd (stdlib only).

    systemctl [--quiet|-q] [--no-pager] [--no-block] [--system] VERB [UNIT ...]

VERB: daemon-reload, enable, disable, start, stop, restart, is-active, is-enabled, status.
Unit files are read from $OCTOBOOT_SANDBOX_SYSTEMD_DIR, else /etc/systemd/system; `enable`
links them into `<target>.wants/` there, as systemd does. `start` runs ExecStart detached (new
session, stdin /dev/null, output to the unit's log) and keeps its PID in
`<control dir>/units/<unit>.pid`, with `<unit>.log` beside it; the control dir is
$OCTOBOOT_SANDBOX_HOST_DIR, else /run/octoboot-sandbox. `stop` sends SIGTERM and then
SIGCONT to the unit's process group (systemd's KillMode=control-group), waits, then SIGKILLs.

Not systemd: nothing restarts a unit that dies (Restart= is ignored), User= is ignored (hosts
run as root), and the service gets the caller's PATH and sandbox variables instead of a clean
environment, so a service finds the same overrides as the command that started it.
"""

from __future__ import annotations

import configparser
import contextlib
import datetime as dt
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

STOP_TIMEOUT_SECONDS = 10.0
_POLL_SECONDS = 0.05
_PASSED_ENVIRONMENT = (
    "PATH",
    "LANG",
    "TentacleMachineConfigurationHomeDirectory",
    "OCTOBOOT_SANDBOX_HOST_DIR",
    "OCTOBOOT_SANDBOX_SYSTEMD_DIR",
)
EXIT_NOT_RUNNING = 3
EXIT_NO_SUCH_UNIT = 4
EXIT_NOT_LOADED = 5


def units_dir() -> Path:
    return Path(os.environ.get("OCTOBOOT_SANDBOX_SYSTEMD_DIR") or "/etc/systemd/system")


def state_dir() -> Path:
    return Path(os.environ.get("OCTOBOOT_SANDBOX_HOST_DIR") or "/run/octoboot-sandbox") / "units"


def unit_name(name: str) -> str:
    return name if "." in name else f"{name}.service"


def pid_file(unit: str) -> Path:
    return state_dir() / f"{unit}.pid"


def _unit_file(unit: str) -> Path:
    return units_dir() / unit


class _UnitParser(configparser.ConfigParser):
    def optionxform(self, optionstr: str) -> str:
        return optionstr  # keys keep their case (ExecStart, WantedBy)


def _read_unit(unit: str) -> configparser.ConfigParser:
    parser = _UnitParser(interpolation=None, strict=False, delimiters=("=",))
    parser.read(_unit_file(unit), encoding="utf-8")
    return parser


def _alive(pid: int) -> bool:
    """Running and not a zombie (a zombie's parent may never reap it in a sandbox namespace)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def main_pid(unit: str) -> int | None:
    """The PID of the unit's running process, if it runs."""
    try:
        pid = int(pid_file(unit).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def _state(unit: str) -> str:
    if main_pid(unit):
        return "active"
    return "failed" if pid_file(unit).exists() else "inactive"


def _wants_links(unit: str) -> list[Path]:
    return sorted(units_dir().glob(f"*.wants/{unit}"))


def start(unit: str) -> int:
    if main_pid(unit):
        return 0
    if not _unit_file(unit).is_file():
        print(f"Failed to start {unit}: Unit {unit} not found.", file=sys.stderr)
        return EXIT_NOT_LOADED
    command = shlex.split(_read_unit(unit).get("Service", "ExecStart", fallback=""))
    environment = {k: v for k, v in os.environ.items() if k in _PASSED_ENVIRONMENT}
    state_dir().mkdir(parents=True, exist_ok=True)
    with open(state_dir() / f"{unit}.log", "ab") as log:
        try:
            process = subprocess.Popen(
                command,
                cwd="/",
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            print(f"Job for {unit} failed: {exc}", file=sys.stderr)
            return 1
    pid_file(unit).write_text(f"{process.pid}\n")
    return 0


def stop(unit: str) -> int:
    pid = main_pid(unit)
    if pid is None:
        if not _unit_file(unit).is_file() and not pid_file(unit).exists():
            print(f"Failed to stop {unit}: Unit {unit} not loaded.", file=sys.stderr)
            return EXIT_NOT_LOADED
        pid_file(unit).unlink(missing_ok=True)
        return 0
    _signal_group(pid, signal.SIGTERM)
    # systemd follows the kill signal with SIGCONT, so a stopped (SIGSTOP) process can act
    # on it at once (systemd.kill(5), KillSignal=).
    _signal_group(pid, signal.SIGCONT)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(_POLL_SECONDS)
    if _alive(pid):
        _signal_group(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(_POLL_SECONDS)
    pid_file(unit).unlink(missing_ok=True)
    return 0


def _signal_group(pid: int, signum: int) -> None:
    # The unit runs in its own session, so its process group is its PID.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signum)


def enable(unit: str) -> int:
    if not _unit_file(unit).is_file():
        print(f"Failed to enable unit: Unit file {unit} does not exist.", file=sys.stderr)
        return 1
    targets = _read_unit(unit).get("Install", "WantedBy", fallback="multi-user.target").split()
    for target in targets:
        link = units_dir() / f"{target}.wants" / unit
        if not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(_unit_file(unit))
            print(f"Created symlink {link} \u2192 {_unit_file(unit)}.", file=sys.stderr)
    return 0


def disable(unit: str) -> int:
    links = _wants_links(unit)
    if not links and not _unit_file(unit).is_file():
        print(f"Failed to disable unit: Unit file {unit} does not exist.", file=sys.stderr)
        return 1
    for link in links:
        link.unlink()
        print(f'Removed "{link}".', file=sys.stderr)
    return 0


def is_active(unit: str, quiet: bool) -> int:
    state = _state(unit)
    if not quiet:
        print(state)
    return 0 if state == "active" else EXIT_NOT_RUNNING


def is_enabled(unit: str, quiet: bool) -> int:
    if not _unit_file(unit).is_file():
        print(
            f"Failed to get unit file state for {unit}: No such file or directory", file=sys.stderr
        )
        return 1
    enabled = bool(_wants_links(unit))
    if not quiet:
        print("enabled" if enabled else "disabled")
    return 0 if enabled else 1


def status(unit: str) -> int:
    if not _unit_file(unit).is_file() and not pid_file(unit).exists():
        print(f"Unit {unit} could not be found.", file=sys.stderr)
        return EXIT_NO_SUCH_UNIT
    description = _read_unit(unit).get("Unit", "Description", fallback=unit)
    enabled = "enabled" if _wants_links(unit) else "disabled"
    print(f"\u25cf {unit} - {description}")
    print(f"     Loaded: loaded ({_unit_file(unit)}; {enabled}; vendor preset: enabled)")
    pid, state = main_pid(unit), _state(unit)
    if pid:
        since = dt.datetime.fromtimestamp(pid_file(unit).stat().st_mtime).strftime("%c")
        print(f"     Active: active (running) since {since}")
        print(f"   Main PID: {pid}")
        return 0
    print(
        f"     Active: {'failed (Result: exit-code)' if state == 'failed' else 'inactive (dead)'}"
    )
    return EXIT_NOT_RUNNING


def main(argv: list[str]) -> int:
    quiet = any(a in ("--quiet", "-q") for a in argv)
    words = [a for a in argv if not a.startswith("-")]
    if not words:
        print("systemctl stand-in: a verb is required", file=sys.stderr)
        return 1
    verb, units = words[0], [unit_name(u) for u in words[1:]]
    if verb == "daemon-reload":
        return 0
    if verb == "default":
        # What booting does: start every unit the default target wants (host_init.sh).
        wanted = sorted({link.name for link in units_dir().glob("multi-user.target.wants/*")})
        return max((start(unit) for unit in wanted), default=0)
    per_unit = {
        "start": start,
        "stop": stop,
        "restart": lambda u: stop(u) or start(u),
        "enable": enable,
        "disable": disable,
        "is-active": lambda u: is_active(u, quiet),
        "is-enabled": lambda u: is_enabled(u, quiet),
        "status": status,
    }
    if verb not in per_unit:
        print(f"Unknown command verb {verb}.", file=sys.stderr)
        return 1
    if not units:
        print(f"Too few arguments for {verb}.", file=sys.stderr)
        return 1
    return max(per_unit[verb](unit) for unit in units)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
