"""Benchmark: one ad-hoc command on N sandbox hosts at once, `inv exec` against its peers.

    python -m benchmarks.fanout --sizes 1,30,100 --repeat 3

Each tool runs as its own process, from start-up to exit, at its widest pool (one worker
per host), on fresh SSH connections to the same sandbox hosts:

- octoboot: `inv exec --env sandbox --parallel --workers N --command CMD`
- Fabric: a ThreadingGroup of the hosts (benchmarks/fanout_fabric.py)
- parallel-ssh: ParallelSSHClient, pool_size N (benchmarks/fanout_pssh.py)
- pyinfra: `pyinfra INVENTORY exec --parallel N -y -- CMD`
- Ansible: `ansible all -m raw -a CMD -f N` (OpenSSH, no connection reuse)

The peers that are not octoboot's dependencies (parallel-ssh, pyinfra, Ansible) come from
the benchmarks' own venv (benchmarks/requirements.txt, `--peers-venv`); a tool that is not
there is left out, and says so. Every tool runs once per size before the measured rounds
(host keys learned, caches warm); then `--repeat` rounds, the tools in turn within each
round, each round starting one tool further on (a tool that always ran right after another
would inherit what that one left running on the hosts). Printed per N and tool: the
median wall time (and all of them), in how many rounds it was the fastest, wall / the
command alone, the median CPU seconds of the tool's processes (controller) and of the hosts,
and the load average when the tool's runs started (this machine's cores are shared).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from benchmarks.measure import PROJECT, Child, host_cpu, load, run_child
from octoboot.sandbox.control import Sandbox

TOOLS = ("octoboot", "fabric", "parallel-ssh", "pyinfra", "ansible")


@dataclass(frozen=True)
class Bench:
    project: Path  # machines/, .env, .octoboot/ and .sandbox/ of this size's sandbox
    sandbox: Sandbox
    size: int
    command: str
    peers: Path  # the benchmarks' venv

    def argv(self, tool: str) -> tuple[list[str], dict[str, str]] | None:
        """How to run tool (argv, environment), or None if it is not installed."""
        root, n, cmd = str(self.sandbox.root), str(self.size), self.command
        peer_bin = self.peers / "bin"
        if tool == "octoboot":
            env = {
                "OCTOBOOT_STATE_DIR": str(self.project / ".octoboot"),
                "OCTOBOOT_MACHINES_DIR": str(self.project / "machines"),
            }
            inv = Path(sys.executable).with_name("inv")
            return [str(inv), "exec", "--env", "sandbox", "--parallel", "--workers", n,
                    "--command", cmd], env  # fmt: skip
        if tool == "fabric":
            return [sys.executable, str(Path(__file__).with_name("fanout_fabric.py")), root,
                    cmd], {}  # fmt: skip
        if tool == "parallel-ssh":
            python = peer_bin / "python"
            if not _has(python, "pssh"):
                return None
            return [str(python), str(Path(__file__).with_name("fanout_pssh.py")), root, cmd], {}
        if tool == "pyinfra":
            if not (peer_bin / "pyinfra").exists():
                return None
            return [str(peer_bin / "pyinfra"), str(self._pyinfra_inventory()), "exec",
                    "--parallel", n, "-y", "--", cmd], {}  # fmt: skip
        if tool == "ansible":
            if not (peer_bin / "ansible").exists():
                return None
            env = {
                # A fresh connection per host and run, as the others: no ControlMaster.
                "ANSIBLE_SSH_ARGS": f"-F {root}/ssh_config -o ControlMaster=no",
                "ANSIBLE_HOME": str(self.project / ".ansible"),
            }
            return [str(peer_bin / "ansible"), "all", "-i", str(self._ansible_inventory()),
                    "-m", "raw", "-a", cmd, "-f", n], env  # fmt: skip
        raise ValueError(tool)

    def _pyinfra_inventory(self) -> Path:
        path = self.project / "pyinfra_inventory.py"
        if not path.exists():
            hosts = [(h.name, {"ssh_hostname": h.address}) for h in self.sandbox.hosts()]
            root = self.sandbox.root
            path.write_text(
                f"hosts = {hosts!r}, {{\n"
                f"    'ssh_user': 'root',\n"
                f"    'ssh_key': {str(root / 'client_key')!r},\n"
                f"    'ssh_known_hosts_file': {str(root / 'known_hosts')!r},\n"
                f"    'ssh_strict_host_key_checking': 'accept-new',\n"
                f"}}\n"
            )
        return path

    def _ansible_inventory(self) -> Path:
        path = self.project / "ansible_inventory.ini"
        if not path.exists():
            lines = ["[sandbox]", *(h.name for h in self.sandbox.hosts()), "",
                     "[sandbox:vars]", "ansible_user=root"]  # fmt: skip
            path.write_text("\n".join(lines) + "\n")
        return path


def _has(python: Path, module: str) -> bool:
    return python.exists() and run_child([str(python), "-c", f"import {module}"]).code == 0


@dataclass
class Figures:
    walls: list[float]
    cpus: list[float]
    host_cpus: list[float]
    loads: list[str]
    codes: list[int]
    failures: list[str]


def measure_size(
    size: int, tools: list[str], command: str, repeat: int, peers: Path, say: Callable
) -> dict[str, Figures]:
    with tempfile.TemporaryDirectory(prefix="octoboot-fanout-") as tmp:
        project = Path(tmp)
        sandbox = Sandbox(project / ".sandbox")
        sandbox.up(size, install_seconds=0)
        try:
            sandbox.write_target_files(project / "machines", project / ".env")
            bench = Bench(project, sandbox, size, command, peers)
            runnable = {}
            for tool in tools:
                how = bench.argv(tool)
                if how is None:
                    say(f"{tool}: not installed in {peers}, left out")
                    continue
                warm = run_child(how[0], env=how[1], timeout=300)
                if warm.code:
                    say(f"{tool}: its first run failed (exit {warm.code}):\n{_tail(warm)}")
                runnable[tool] = how
            if not runnable:
                return {}
            figures = {tool: Figures([], [], [], [], [], []) for tool in runnable}
            order = list(runnable.items())
            for round_ in range(1, repeat + 1):
                turn = (round_ - 1) % len(order)
                for tool, (argv, env) in order[turn:] + order[:turn]:
                    before, loaded = host_cpu(sandbox), load()
                    child = run_child(argv, env=env, timeout=300)
                    got = figures[tool]
                    got.walls.append(child.wall)
                    got.cpus.append(child.cpu)
                    got.host_cpus.append(host_cpu(sandbox) - before)
                    got.loads.append(loaded)
                    got.codes.append(child.code)
                    if child.code:
                        got.failures.append(f"exit {child.code}: {_tail(child)}")
                    say(f"N={size} round {round_} {tool}: {child.wall:.2f} s (load {loaded})")
            return figures
        finally:
            sandbox.down()


def _fastest(figures: dict[str, Figures], round_: int) -> str | None:
    """The tool whose run of that round was the fastest of those that succeeded."""
    ok = [tool for tool, got in figures.items() if got.codes[round_] == 0]
    return min(ok, key=lambda tool: figures[tool].walls[round_], default=None)


def _tail(child: Child) -> str:
    return "\n".join(child.output.strip().splitlines()[-5:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,30,100")
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--command", default="sleep 2; echo ok")
    parser.add_argument("--alone", type=float, default=2.0, help="seconds the command takes")
    parser.add_argument("--repeat", type=int, default=3, help="measured rounds (median)")
    parser.add_argument("--peers-venv", type=Path, default=PROJECT / ".venv-bench")
    args = parser.parse_args()
    tools = [t for t in args.tools.split(",") if t]
    unknown = set(tools) - set(TOOLS)
    if unknown:
        parser.error(f"unknown tools {', '.join(sorted(unknown))} (known: {', '.join(TOOLS)})")

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    rows = []
    for size in [int(n) for n in args.sizes.split(",")]:
        figures = measure_size(size, tools, args.command, args.repeat, args.peers_venv, say)
        fastest = [_fastest(figures, i) for i in range(args.repeat)]
        for tool, got in figures.items():
            wall = statistics.median(got.walls)
            rows.append([
                size, tool, f"{wall:.2f}", " ".join(f"{w:.2f}" for w in got.walls),
                f"{fastest.count(tool)} of {args.repeat}",
                f"{wall / args.alone:.2f}", f"{statistics.median(got.cpus):.2f}",
                f"{statistics.median(got.host_cpus):.2f}", " ".join(got.loads),
                "; ".join(got.failures) or "all ok",
            ])  # fmt: skip
    print(f"command: {args.command!r}, {args.repeat} rounds")
    headers = ["N", "tool", "median wall s", "walls", "fastest in", "wall / command",
               "controller CPU s", "hosts' CPU s", "load", "outcome"]  # fmt: skip
    print(tabulate(rows, headers=headers))


if __name__ == "__main__":
    main()
