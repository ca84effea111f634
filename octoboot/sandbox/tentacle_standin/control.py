"""The sandbox's hold on the stand-in: a record of every call, and faults to inject.

The control dir is $OCTOBOOT_SANDBOX_HOST_DIR, else /run/octoboot-sandbox (one per sandbox host).
- `argv.jsonl`: one JSON line per invocation, {"time", "pid", "argv"}, written before anything
  is parsed, so the sandbox can prove that no secret ever reached a host's command line.
- `faults.json` (optional): {"install_fails": bool, "install_seconds": float,
  "hang": ["<command>", ...] or ["*"], "untrusting": bool}; an untrusting Tentacle's
  service trusts no server whatever its configuration says.
- `latency.json` (optional): {"startup_seconds": float}, the time every command takes to
  start, as a real Tentacle (a .NET program) does; slept, so it costs no CPU.
The first invocation after extraction (no `.first-run-complete` in the install dir) stands for the
time a real install takes, and is where an install failure shows.
"""

from __future__ import annotations

import os
import sys
import time

from .jsontext import dumps, loads

FIRST_RUN_MARKER = ".first-run-complete"
INSTALL_FAILURE = "Failed to extract the bundled .NET runtime: No space left on device"
INSTALL_FAILURE_EXIT_CODE = 100
_HANG_SECONDS = 24 * 60 * 60


class Faults:
    __slots__ = ("hang", "install_fails", "install_seconds", "untrusting")

    def __init__(
        self,
        install_fails: bool = False,
        install_seconds: float = 0.0,
        hang: tuple[str, ...] = (),
        untrusting: bool = False,
    ) -> None:
        self.install_fails, self.install_seconds = install_fails, install_seconds
        self.hang, self.untrusting = hang, untrusting


def control_dir() -> str:
    return os.environ.get("OCTOBOOT_SANDBOX_HOST_DIR") or "/run/octoboot-sandbox"


def record_invocation(argv: list[str]) -> None:
    directory = control_dir()
    os.makedirs(directory, exist_ok=True)
    line = {"time": _utc_now(), "pid": os.getpid(), "argv": argv}
    # One write on an O_APPEND file, so concurrent invocations never interleave their lines.
    with open(os.path.join(directory, "argv.jsonl"), "a", encoding="utf-8") as out:
        out.write(dumps(line) + "\n")


def _utc_now() -> str:
    """datetime.now(UTC).isoformat(), without importing datetime for every command."""
    now = time.time_ns()
    seconds, micros = divmod(now // 1000, 1_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{text}.{micros:06d}+00:00" if micros else f"{text}+00:00"


def _read(name: str) -> dict | None:
    """A control file as the sandbox writes it (json.dumps, default layout), or None."""
    try:
        with open(os.path.join(control_dir(), name), encoding="utf-8") as file:
            text = file.read()
    except FileNotFoundError:
        return None
    raw = loads(text)
    if not isinstance(raw, dict):
        raise ValueError(f"{name} holds no JSON object")
    return raw


def load_faults() -> Faults:
    raw = _read("faults.json")
    if raw is None:
        return Faults()
    return Faults(
        install_fails=bool(raw.get("install_fails", False)),
        install_seconds=float(raw.get("install_seconds", 0.0)),
        hang=tuple(raw.get("hang", ())),
        untrusting=bool(raw.get("untrusting", False)),
    )


def sleep_like_a_startup() -> None:
    raw = _read("latency.json")
    if raw is not None:
        time.sleep(float(raw.get("startup_seconds", 0)))


def finish_first_run(install_dir: str, faults: Faults) -> bool:
    """Play the install's first run if it has not happened; False if the install failed."""
    marker = os.path.join(install_dir, FIRST_RUN_MARKER)
    if os.path.exists(marker):
        return True
    time.sleep(faults.install_seconds)
    if faults.install_fails:
        print(INSTALL_FAILURE, file=sys.stderr, flush=True)
        return False
    open(marker, "a").close()
    return True


def hang_if_told(command: str, faults: Faults) -> None:
    """Block like a hung command; default signal handling lets SIGTERM, SIGHUP or SIGKILL end it."""
    if "*" not in faults.hang and command not in faults.hang:
        return
    deadline = time.monotonic() + _HANG_SECONDS
    while time.monotonic() < deadline:
        time.sleep(60)
