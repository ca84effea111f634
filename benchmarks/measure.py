"""What the benchmarks measure, in one place: a child process's wall time and CPU, the CPU
of a sandbox's hosts, and the machine's load at the time (the figures are only comparable
within one run: this machine's two cores are shared)."""

from __future__ import annotations

import os
import resource
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from octoboot.sandbox.control import Sandbox

PROJECT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Child:
    wall: float  # seconds from start to exit
    cpu: float  # CPU seconds of the child and every process it waited for
    code: int
    output: str  # stdout and stderr, as they came


def run_child(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 600
) -> Child:
    """Run argv to its end (killed after timeout seconds) and measure it."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.run(
        list(argv),
        env={**os.environ, **(env or {})},
        cwd=PROJECT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return Child(wall, cpu, proc.returncode, proc.stdout)


def host_cpu(sandbox: Sandbox) -> float:
    """CPU seconds used so far by every process of the sandbox's hosts (sshd and all it
    started, ended children included). The difference before and after a run is its cost
    on the hosts."""
    return _cpu([h["process"]["pid"] for h in sandbox.state()["hosts"] if h.get("process")])


def server_cpu(sandbox: Sandbox) -> float:
    """CPU seconds used so far by the Octopus and package stand-ins."""
    return _cpu([rec["pid"] for rec in sandbox.state()["servers"].values()])


def _cpu(roots: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in _tree(roots):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total / ticks


def _tree(roots: list[int]) -> list[int]:
    """roots and all their descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], list(roots)
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack += children.get(pid, [])
    return found


def load() -> str:
    """The 1-minute load average now, to print beside a figure."""
    return f"{os.getloadavg()[0]:.1f}"
