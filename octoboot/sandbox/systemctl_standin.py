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

import _signal  # signal's constants without signal's enum import
import os
import sys
import time

# Only os, sys and time, and paths as strings (pathlib imports half the standard library):
# every call is a new Python process, and two thirds of its CPU went to imports (configparser,
# shlex and subprocess bring re, enum and more: a service's start cost twice a bare Python).
# Units are read and their command split here, as systemd does it, and the service spawned
# by os.posix_spawn; signal and datetime come with the verbs that use them; not even typing
# (mypy knows a TYPE_CHECKING of our own) nor contextlib.

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


def _read_unit(unit: str) -> dict[str, list[str]]:
    """Section.Key -> every value assigned to it, in order, as systemd reads a unit file
    (systemd.syntax(7)): `#` and `;` start comments, a line ending in a backslash goes on
    on the next, whitespace around `=` is dropped, and an empty value resets the list
    (list settings such as WantedBy= add up; for single ones the last value counts)."""
    settings: dict[str, list[str]] = {}
    section, pending = "", ""
    try:
        text = _read(_unit_file(unit))
    except OSError:
        return settings  # none: only `status` asks of a unit that may have no file
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and line[:1] in ("#", ";"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif "=" in line:
            key, _, value = line.partition("=")
            values = settings.setdefault(f"{section}.{key.strip()}", [])
            if value.strip():
                values.append(value.strip())
            else:
                values.clear()
    return settings


def _last(settings: dict[str, list[str]], key: str, fallback: str) -> str:
    values = settings.get(key)
    return values[-1] if values else fallback


def _split_command(line: str) -> list[str]:
    """An ExecStart= line's words (systemd.service(5), "Command lines"): split at
    whitespace, "double" and 'single' quotes group, a backslash takes the next character."""
    words: list[str] = []
    word: str | None = None
    quote = ""
    chars = iter(line)
    for char in chars:
        if char == "\\":
            word = (word or "") + next(chars, "")
        elif quote:
            if char == quote:
                quote = ""
            else:
                word = (word or "") + char
        elif char in ("'", '"'):
            quote, word = char, word or ""
        elif char.isspace():
            if word is not None:
                words.append(word)
            word = None
        else:
            word = (word or "") + char
    if word is not None:
        words.append(word)
    return words


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


def _wants_links(unit: str) -> list[str]:
    """The unit's links in every `<target>.wants/` folder."""
    try:
        wants = [e.path for e in os.scandir(units_dir()) if e.name.endswith(".wants")]
    except OSError:
        return []
    return sorted(link for w in wants if os.path.islink(link := os.path.join(w, unit)))


def start(unit: str) -> int:
    if main_pid(unit):
        return 0
    if not os.path.isfile(_unit_file(unit)):
        print(f"Failed to start {unit}: Unit {unit} not found.", file=sys.stderr)
        return EXIT_NOT_LOADED
    command = _split_command(_last(_read_unit(unit), "Service.ExecStart", ""))
    if not command:  # systemd refuses to load such a service
        print(f"Failed to start {unit}: Unit {unit} has a bad unit file setting.", file=sys.stderr)
        return 1
    environment = {k: v for k, v in os.environ.items() if k in _PASSED_ENVIRONMENT}
    os.makedirs(state_dir(), exist_ok=True)
    log = os.open(
        os.path.join(state_dir(), f"{unit}.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666
    )
    # Detached as subprocess.Popen(start_new_session=True) made it: a new session, stdin
    # /dev/null, output to the unit's log, no descriptor of the caller's (a pipe of an SSH
    # session kept open by a service would hold that session), the signals Python ignores
    # back to their defaults, and / as its working directory (posix_spawn has no chdir of its
    # own: this process goes there for the spawn, and back).
    for fd in os.listdir("/proc/self/fd"):
        if int(fd) > 2:  # the log too: os.open's descriptors are close-on-exec
            try:  # noqa: SIM105 (contextlib would cost every call its imports)
                os.set_inheritable(int(fd), False)
            except OSError:
                pass  # the listing's own descriptor, closed by now
    here = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)  # fchdir takes it
    os.chdir("/")
    try:
        pid = os.posix_spawnp(
            command[0],
            command,
            environment,
            setsid=True,
            setsigdef=(_signal.SIGPIPE, _signal.SIGXFSZ),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, log, 1),
                (os.POSIX_SPAWN_DUP2, log, 2),
            ],
        )
    except OSError as exc:
        print(f"Job for {unit} failed: {exc}", file=sys.stderr)
        return 1
    finally:
        os.close(log)
        os.fchdir(here)
        os.close(here)
    with open(pid_file(unit), "w", encoding="utf-8") as file:
        file.write(f"{pid}\n")
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
    wanted_by = _read_unit(unit).get("Install.WantedBy") or ["multi-user.target"]
    for target in " ".join(wanted_by).split():
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
    description = _last(_read_unit(unit), "Unit.Description", unit)
    enabled = "enabled" if _wants_links(unit) else "disabled"
    print(f"\u25cf {unit} - {description}")
    print(f"     Loaded: loaded ({_unit_file(unit)}; {enabled}; vendor preset: enabled)")
    pid = main_pid(unit)
    if pid:
        import datetime as dt

        since = dt.datetime.fromtimestamp(os.stat(pid_file(unit)).st_mtime).strftime("%c")
        print(f"     Active: active (running) since {since}")
        print(f"   Main PID: {pid}")
        return 0
    failed = os.path.exists(pid_file(unit))  # a pid file left by a process that is gone
    print(f"     Active: {'failed (Result: exit-code)' if failed else 'inactive (dead)'}")
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
