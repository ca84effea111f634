"""Inventories from elsewhere: an inventory file whose machines come from a command.

    [source]
    command = "terraform output -json machines"   # run by /bin/sh in the file's folder
    timeout = 30                                   # seconds (default 30)

The command prints a JSON list with one object per machine, holding what a `[[machines]]`
table holds (`name`, `address`, and optionally `roles` and every other per-machine key):

    [{"name": "web01", "address": "10.0.0.5"}, {"name": "web02", "address": "10.0.0.6",
      "roles": ["web", "api"]}]

Ansible's dynamic inventories and pyinfra's connectors are the model: the list of machines
belongs to whatever made them (Terraform, a cloud API). This module only runs the command
and checks that what it printed is a list of objects; inventory.py checks each machine
exactly as it checks a TOML one. A command that fails, outlives its timeout or prints
anything else is one line naming the file and the command (ConfigError: exit 2, nothing
touched). The command runs in a session of its own, so that a timeout ends everything it
started (a script's children included), with no standard input, and without octoboot's own
secrets in its environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from octoboot.errors import ConfigError
from octoboot.report import one_line

DEFAULT_TIMEOUT = 30.0
# A command has no business seeing these: they are octoboot's, not the inventory's.
_WITHHELD = ("OCTOBOOT_PFX_PASSWORD", "OCTOPUS_API_KEY", "OCTOPUS_API_KEY_FILE")
_EXAMPLE = '[{"name": "web01", "address": "10.0.0.5"}, ...]'


def machines_from_command(path: Path, command: str, timeout: float) -> list[dict[str, Any]]:
    """The machine tables the command of `path`'s [source] prints (not checked yet)."""
    where = f"{path}: [source] command {command!r}"
    output = _run(where, path.parent, command, timeout)
    try:
        data = json.loads(output)
    except UnicodeDecodeError:
        raise ConfigError(f"{where} printed something that is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        text = one_line(output.decode(errors="replace"), 60)
        printed = f"printed {text!r}" if output.strip() else "printed nothing"
        raise ConfigError(
            f"{where} {printed}, which is not JSON ({exc.msg}): it must print a JSON list of "
            f"machines, e.g. {_EXAMPLE}"
        ) from None
    if not isinstance(data, list):
        raise ConfigError(
            f"{where} printed a JSON {_json_kind(data)}, not a list of machines: it must print "
            f"e.g. {_EXAMPLE}"
        )
    for number, entry in enumerate(data, start=1):
        if not isinstance(entry, dict):
            raise ConfigError(
                f"{where}: machine {number} is a JSON {_json_kind(entry)}, not an object with "
                'its keys (e.g. {"name": "web01", "address": "10.0.0.5"})'
            )
    return data


def _run(where: str, folder: Path, command: str, timeout: float) -> bytes:
    environment = {k: v for k, v in os.environ.items() if k not in _WITHHELD}
    try:
        process = subprocess.Popen(
            ["/bin/sh", "-c", command],
            cwd=folder,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise ConfigError(f"{where} could not be started: {exc.strerror or exc}") from None
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _end(process)
        raise ConfigError(
            f"{where} did not finish within {timeout:g} s, and was stopped (raise `timeout` "
            "under [source] if it is just slow)"
        ) from None
    except BaseException:  # Ctrl-C: leave nothing running
        _end(process)
        raise
    if process.returncode != 0:
        said = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
        tail = f": {one_line(said[-1], 200)}" if said else ""
        how = (
            f"was killed by signal {-process.returncode}"
            if process.returncode < 0
            else f"failed (exit {process.returncode})"
        )
        raise ConfigError(f"{where} {how}{tail}")
    return stdout


def _end(process: subprocess.Popen[bytes]) -> None:
    """End the command and everything it started (its session), and reap it. Its output is
    not read: something that left the session may still hold the pipes open."""
    with contextlib.suppress(ProcessLookupError):  # already gone, with its session
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def _json_kind(value: Any) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "true/false", type(None): "null"}
    return names.get(type(value), "number")
