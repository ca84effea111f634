"""Benchmark: where the sandbox hosts' CPU goes during a bootstrap, per kind of process.

    python -m benchmarks.host_cost --hosts 10 --install-seconds 5

A new sandbox of N hosts comes up with the stand-ins' defaults; one bootstrap runs in
parallel (as `benchmarks.bootstrap` runs it), then the same again with nothing to change.
Meanwhile every process of the hosts is sampled every 10 ms for what it is (a Tentacle
command by its name, `Tentacle run` the service, the systemctl stand-in, sshd, a shell...)
and its CPU so far, and the kernel reports every task that ends with its exact time on a
CPU (`benchmarks.taskstats`): an ended process counts its exit record, one still running
its last sample; one that ended unseen goes by its command name (`python` is then mostly
the systemctl stand-in). What the hosts used in all (`measure.host_cpu`, ended children
included) less what was attributed is printed as `unattributed`: an ended task's record
misses its run since the last scheduler tick (4 ms here). Figures are CPU seconds per
machine, with the load average at the start: this machine's two cores run other work too.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

from tabulate import tabulate

from benchmarks.bootstrap import run_once
from benchmarks.measure import _tree, host_cpu
from benchmarks.taskstats import Exit, Exits
from octoboot.sandbox.control import Sandbox
from octoboot.sandbox.standin_settings import StandInSettings

_PROGRAMS = {"Tentacle": ("/Tentacle",), "systemctl": ("systemctl.pyc", "sbin/systemctl")}
# A process's start in /proc/<pid>/stat is in clock ticks since boot.
_TICKS = os.sysconf("SC_CLK_TCK")
_BOOTED = next(
    int(line.split()[1])
    for line in Path("/proc/stat").read_text().splitlines()
    if line.startswith("btime ")
)


def kind(cmdline: list[str]) -> str:
    """What a host process is, from its command line."""
    if not cmdline:
        return "?"
    for at, word in enumerate(cmdline):
        # The Tentacle launcher (`python -S .../Tentacle`), Python's systemctl (`.systemctl.pyc`)
        # and the systemctl launcher's shell: by the command or verb that follows.
        named = next((n for n, ends in _PROGRAMS.items() if word.endswith(ends)), None)
        if named:
            words = [a for a in cmdline[at + 1 :] if a[:1] != "-"]
            return f"{named} {words[0] if words else ''}".strip()
    return Path(cmdline[0].split()[0].rstrip(":")).name


class Sampler:
    """Samples every process under the given roots until stopped."""

    def __init__(self, roots: list[int], every: float = 0.01) -> None:
        self.roots, self.every = roots, every
        self.seen: dict[tuple[int, int], tuple[str, int]] = {}  # (pid, start) -> (kind, ns)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            for pid in _tree(self.roots):
                try:
                    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    # Time on a CPU in ns (stat's utime and stime count whole 10 ms ticks,
                    # which most of a shell's or a short command's cost falls below).
                    ran = int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
                    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                key = (pid, int(stat[19]))  # a pid and its start time: one process
                name = kind(raw.decode(errors="replace").split("\0")[:-1])
                if name == "?" and key in self.seen:  # a zombie has no command line left
                    name = self.seen[key][0]
                self.seen[key] = (name, ran)

    def by_kind(
        self, since: dict[tuple[int, int], int], exits: list[Exit]
    ) -> dict[str, tuple[int, float]]:
        """kind -> (processes, CPU seconds) used after `since` (an earlier `snapshot`), with
        the exact figure of every host task in `exits` (those that ended meanwhile): a
        thread's counts for its process, not as a process of its own."""
        sampled: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for key in sorted(self.seen, key=lambda k: k[1]):
            sampled[key[0]].append(key)

        def process(pid: int, started: int) -> tuple[int, int] | None:
            """The sampled process with this pid that had started by then (pids are reused:
            a rerun's process may have a first run's pid)."""
            if not started:  # a kernel whose records carry no start time (taskstats < 10)
                return sampled[pid][-1] if pid in sampled else None
            fits = [k for k in sampled.get(pid, ()) if self._started(k) <= started + 1]
            return fits[-1] if fits else None

        hosts = set(self.roots) | set(sampled)
        ours: list[Exit] = []
        pending = list(exits)
        while True:  # a parent that ended unseen is known by its own exit
            grown: list[Exit] = []
            left: list[Exit] = []
            for e in pending:
                (grown if hosts & {e.pid, e.tgid, e.ppid} else left).append(e)
            if not grown:
                break
            ours += grown
            pending = left
            hosts |= {e.pid for e in grown}
        totals: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
        ended = set()
        for e in ours:
            owner = process(e.tgid, e.started)
            name = self.seen[owner][0] if owner else e.comm
            # A thread: never sampled, so its whole time counts (one that began before
            # the run would bring its earlier time too; the hosts' threads that end in a
            # run are its own: the services' outlive it).
            if e.pid != e.tgid:
                totals[name][1] += e.ns / 1e9
                continue
            ended.add(owner)
            totals[name][0] += owner not in since
            totals[name][1] += (e.ns - since.get(owner, 0) if owner else e.ns) / 1e9
        for key, (name, ran) in self.seen.items():
            used = (ran - since.get(key, 0)) / 1e9
            if key not in ended and (used or key not in since):
                totals[name][0] += key not in since
                totals[name][1] += used
        return {name: (int(n), cpu) for name, (n, cpu) in totals.items()}

    @staticmethod
    def _started(key: tuple[int, int]) -> float:
        """When a sampled process started, in seconds since the epoch (as taskstats says)."""
        return _BOOTED + key[1] / _TICKS

    def snapshot(self) -> dict[tuple[int, int], int]:
        return {key: ticks for key, (_, ticks) in self.seen.items()}


def _sessions_closed(roots: list[int], within: float = 5.0) -> None:
    """Wait, at most `within` seconds, until the hosts' SSH sessions have ended (sshd's
    per-connection processes, which call themselves `sshd: ...`; the listeners keep their
    command line)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        titles = []
        for pid in _tree(roots):
            with contextlib.suppress(OSError):  # ended meanwhile
                titles.append(Path(f"/proc/{pid}/cmdline").read_bytes())
        if not any(title.startswith(b"sshd: ") for title in titles):
            return
        time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--install-seconds", type=float, default=5.0)
    args = parser.parse_args()
    size = args.hosts
    with tempfile.TemporaryDirectory(prefix="octoboot-bench-") as tmp:
        project = Path(tmp)
        sandbox = Sandbox(project / ".sandbox")
        sandbox.up(size, install_seconds=args.install_seconds, settings=StandInSettings())
        try:
            sandbox.write_target_files(project / "machines", project / ".env")
            roots = [h["process"]["pid"] for h in sandbox.state()["hosts"] if h.get("process")]
            with Exits() as exits, Sampler(roots) as sampler:
                runs = []
                for label in ("first run", "rerun"):
                    before, total = sampler.snapshot(), host_cpu(sandbox)
                    first, lost = len(exits.exits), exits.lost
                    figures = run_once(project, sandbox, size, "shared")
                    _sessions_closed(roots)  # sshd ends them after octoboot has exited
                    exits.drain()  # the last exits' records
                    kinds = sampler.by_kind(before, exits.exits[first:])
                    total = host_cpu(sandbox) - total
                    runs.append((label, figures, kinds, total, exits.lost - lost))
        finally:
            sandbox.down()
    for label, figures, kinds, total, lost in runs:
        seen = sum(cpu for _, cpu in kinds.values())
        rows = [
            [name, f"{n / size:.1f}", f"{cpu / size:.3f}"]
            for name, (n, cpu) in sorted(kinds.items(), key=lambda kv: -kv[1][1])
        ]
        rows.append(["unattributed", "", f"{(total - seen) / size:.3f}"])
        rows.append(["hosts in all", "", f"{total / size:.3f}"])
        rows.append(["controller", "", f"{figures['controller']:.3f}"])
        print(f"\n{label}: {size} machines, {figures['wall']:.1f} s, load {figures['load']}, "
              f"{figures['counts']}")  # fmt: skip
        print(tabulate(rows, headers=["per machine", "processes", "CPU-s"]))
        if lost:
            print(f"the kernel dropped {lost} batch(es) of exit records: their CPU is unattributed")


if __name__ == "__main__":
    main()
