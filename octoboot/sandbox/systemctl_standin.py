"""A systemctl stand-in for sandbox hosts, which run no systemd (stdlib only).

    systemctl [--quiet|-q] [--no-pager] [--no-block] [--system] VERB [UNIT ...]

VERB: daemon-reload, enable, disable, start, stop, restart, is-active, is-enabled, status;
daemon-reload, is-active and is-enabled are answered by the launcher's shell before Python
starts (`systemctl_standin.sh`: they are called several times per machine), the rest here.
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

import os
import sys
import time

# Only os, sys and time for every call, and paths as strings (pathlib imports half the
# standard library): every call is a new Python process, and two thirds of its CPU went to
# imports. configparser, subprocess, shlex, signal and datetime come with the verbs that use
# them; not even typing (mypy knows a TYPE_CHECKING of our own) nor contextlib.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import configparser

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


def units_dir() -> str:
    return os.environ.get("OCTOBOOT_SANDBOX_SYSTEMD_DIR") or "/etc/systemd/system"


def state_dir() -> str:
    return os.path.join(
        os.environ.get("OCTOBOOT_SANDBOX_HOST_DIR") or "/run/octoboot-sandbox", "units"
    )


def unit_name(name: str) -> str:
    return name if "." in name else f"{name}.service"


def pid_file(unit: str) -> str:
    return os.path.join(state_dir(), f"{unit}.pid")


def _unit_file(unit: str) -> str:
    return os.path.join(units_dir(), unit)


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as file:
        return file.read()


def _read_unit(unit: str) -> configparser.ConfigParser:
    import configparser  # only the verbs that read units pay for it

    class UnitParser(configparser.ConfigParser):
        def optionxform(self, optionstr: str) -> str:
            return optionstr  # keys keep their case (ExecStart, WantedBy)

    parser = UnitParser(interpolation=None, strict=False, delimiters=("=",))
    parser.read(_unit_file(unit), encoding="utf-8")
    return parser


def _alive(pid: int) -> bool:
    """Running and not a zombie (a zombie's parent may never reap it in a sandbox namespace)."""
    try:
        stat = _read(f"/proc/{pid}/stat")
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def main_pid(unit: str) -> int | None:
    """The PID of the unit's running process, if it runs."""
    try:
        pid = int(_read(pid_file(unit)).strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def _state(unit: str) -> str:
    if main_pid(unit):
        return "active"
    return "failed" if os.path.exists(pid_file(unit)) else "inactive"


def _wants_links(unit: str) -> list[str]:
    """The unit's links in every `<target>.wants/` folder."""
    try:
        wants = [e.path for e in os.scandir(units_dir()) if e.name.endswith(".wants")]
    except OSError:
        return []
    return sorted(link for w in wants if os.path.islink(link := os.path.join(w, unit)))


def start(unit: str) -> int:
    import shlex
    import subprocess

    if main_pid(unit):
        return 0
    if not os.path.isfile(_unit_file(unit)):
        print(f"Failed to start {unit}: Unit {unit} not found.", file=sys.stderr)
        return EXIT_NOT_LOADED
    command = shlex.split(_read_unit(unit).get("Service", "ExecStart", fallback=""))
    environment = {k: v for k, v in os.environ.items() if k in _PASSED_ENVIRONMENT}
    os.makedirs(state_dir(), exist_ok=True)
    with open(os.path.join(state_dir(), f"{unit}.log"), "ab") as log:
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
    with open(pid_file(unit), "w", encoding="utf-8") as file:
        file.write(f"{process.pid}\n")
    return 0


def stop(unit: str) -> int:
    import signal

    pid = main_pid(unit)
    if pid is None:
        if not os.path.isfile(_unit_file(unit)) and not os.path.exists(pid_file(unit)):
            print(f"Failed to stop {unit}: Unit {unit} not loaded.", file=sys.stderr)
            return EXIT_NOT_LOADED
        _remove(pid_file(unit))
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
    _remove(pid_file(unit))
    return 0


def _remove(path: str) -> None:
    try:  # noqa: SIM105 (contextlib would cost every call its imports)
        os.unlink(path)
    except FileNotFoundError:
        pass


def _signal_group(pid: int, signum: int) -> None:
    # The unit runs in its own session, so its process group is its PID.
    try:  # noqa: SIM105
        os.killpg(pid, signum)
    except ProcessLookupError:
        pass


def enable(unit: str) -> int:
    if not os.path.isfile(_unit_file(unit)):
        print(f"Failed to enable unit: Unit file {unit} does not exist.", file=sys.stderr)
        return 1
    targets = _read_unit(unit).get("Install", "WantedBy", fallback="multi-user.target").split()
    for target in targets:
        link = os.path.join(units_dir(), f"{target}.wants", unit)
        if not os.path.islink(link):
            os.makedirs(os.path.dirname(link), exist_ok=True)
            os.symlink(_unit_file(unit), link)
            print(f"Created symlink {link} \u2192 {_unit_file(unit)}.", file=sys.stderr)
    return 0


def disable(unit: str) -> int:
    links = _wants_links(unit)
    if not links and not os.path.isfile(_unit_file(unit)):
        print(f"Failed to disable unit: Unit file {unit} does not exist.", file=sys.stderr)
        return 1
    for link in links:
        os.unlink(link)
        print(f'Removed "{link}".', file=sys.stderr)
    return 0


def status(unit: str) -> int:
    if not os.path.isfile(_unit_file(unit)) and not os.path.exists(pid_file(unit)):
        print(f"Unit {unit} could not be found.", file=sys.stderr)
        return EXIT_NO_SUCH_UNIT
    description = _read_unit(unit).get("Unit", "Description", fallback=unit)
    enabled = "enabled" if _wants_links(unit) else "disabled"
    print(f"\u25cf {unit} - {description}")
    print(f"     Loaded: loaded ({_unit_file(unit)}; {enabled}; vendor preset: enabled)")
    pid, state = main_pid(unit), _state(unit)
    if pid:
        import datetime as dt

        since = dt.datetime.fromtimestamp(os.stat(pid_file(unit)).st_mtime).strftime("%c")
        print(f"     Active: active (running) since {since}")
        print(f"   Main PID: {pid}")
        return 0
    print(
        f"     Active: {'failed (Result: exit-code)' if state == 'failed' else 'inactive (dead)'}"
    )
    return EXIT_NOT_RUNNING


def main(argv: list[str]) -> int:
    words = [a for a in argv if not a.startswith("-")]
    if not words:
        print("systemctl stand-in: a verb is required", file=sys.stderr)
        return 1
    verb, units = words[0], [unit_name(u) for u in words[1:]]
    if verb == "default":
        # What booting does: start every unit the default target wants (host_init.sh).
        target = os.path.join(units_dir(), "multi-user.target.wants")
        wanted = sorted(os.listdir(target)) if os.path.isdir(target) else []
        return max((start(unit) for unit in wanted), default=0)
    per_unit = {
        "start": start,
        "stop": stop,
        "restart": lambda u: stop(u) or start(u),
        "enable": enable,
        "disable": disable,
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
