"""Benchmark: one command (`sleep 2`) on N sandbox hosts at once, as `inv exec` runs it,
against Fabric's own ThreadingGroup on the same hosts.

    python -m benchmarks.fanout --sizes 10,30,100 --command 'sleep 2'

Both connect fresh (new SSH connections, same ssh_config and keys), with one worker per
host; printed per N: wall time, wall / (the command alone), controller CPU seconds.
For scale, the issue measured on this kind of machine with 100 local sshd hosts: pyinfra
--parallel 100 4.1 s, Fabric ThreadingGroup 4.6 s, parallel-ssh 4.8 s, Ansible raw -f 100
11.2 s (one host: 2.3-3.2 s).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import paramiko
from fabric import Config, ThreadingGroup
from tabulate import tabulate

from octoboot import jobs
from octoboot.sandbox.control import Sandbox
from octoboot.settings import load_settings


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def octoboot_exec(project: Path, size: int, command: str) -> tuple[float, float, str]:
    settings = load_settings(
        environ={
            "OCTOBOOT_STATE_DIR": str(project / ".octoboot"),
            "OCTOBOOT_MACHINES_DIR": str(project / "machines"),
        },
        dotenv_path=project / ".env",
    )
    started, cpu0 = time.monotonic(), cpu()
    report = jobs.exec_command(
        jobs.Selection(env="sandbox"),
        jobs.RunOptions(parallel=True, workers=size, console=lambda line: None),
        settings,
        command=command,
    )
    outcome = ", ".join(f"{n} {s}" for s, n in report.counts().items())
    return time.monotonic() - started, cpu() - cpu0, outcome


def fabric_threading_group(sandbox: Sandbox, command: str) -> tuple[float, float, str]:
    config = Config(ssh_config=paramiko.SSHConfig.from_path(str(sandbox.endpoints().ssh_config)))
    config.run.in_stream = False
    started, cpu0 = time.monotonic(), cpu()
    group = ThreadingGroup(*(h.name for h in sandbox.hosts()), config=config)
    try:
        results = group.run(command, hide=True)
        outcome = f"{len(results.succeeded)} ok"
    finally:
        group.close()
    return time.monotonic() - started, cpu() - cpu0, outcome


def parallel_ssh(python: str, sandbox: Sandbox, command: str) -> tuple[float, float, str]:
    """benchmarks/fanout_pssh.py run by another Python (one that has parallel-ssh)."""
    script = Path(__file__).with_name("fanout_pssh.py")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    out = subprocess.run([python, str(script), str(sandbox.root), command], check=True,
                         capture_output=True, text=True).stdout  # fmt: skip
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    return wall, used, out.strip().rsplit(", ", 1)[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,30,100")
    parser.add_argument("--command", default="sleep 2")
    parser.add_argument("--alone", type=float, default=2.0, help="seconds the command takes")
    parser.add_argument("--pssh-python", help="a Python with parallel-ssh, to compare it too")
    args = parser.parse_args()
    rows = []
    for size in [int(n) for n in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory(prefix="octoboot-fanout-") as tmp:
            project = Path(tmp)
            sandbox = Sandbox(project / ".sandbox")
            sandbox.up(size, install_seconds=0)
            try:
                sandbox.write_target_files(project / "machines", project / ".env")
                octoboot_exec(project, size, "true")  # host keys learned, caches warm
                runners = ["octoboot exec", "fabric ThreadingGroup"]
                runners += ["parallel-ssh"] if args.pssh_python else []
                for name in runners:
                    if name == "octoboot exec":
                        wall, used, outcome = octoboot_exec(project, size, args.command)
                    elif name == "parallel-ssh":
                        wall, used, outcome = parallel_ssh(args.pssh_python, sandbox, args.command)
                    else:
                        wall, used, outcome = fabric_threading_group(sandbox, args.command)
                    rows.append([size, name, f"{wall:.2f}", f"{wall / args.alone:.2f}",
                                 f"{used:.1f}", outcome])  # fmt: skip
            finally:
                sandbox.down()
    print(f"command: {args.command!r}")
    print(tabulate(rows, headers=["N", "runner", "wall s", "wall / command", "CPU s", "outcome"]))


if __name__ == "__main__":
    main()
