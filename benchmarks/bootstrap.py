"""Benchmark: bootstrap N fresh sandbox machines, each install taking S seconds.

    python -m benchmarks.bootstrap --sizes 1,10,30,100 --install-seconds 5

For each N a new sandbox of N hosts is brought up, then one bootstrap runs in a child
process (so that its CPU time and peak RSS are its own): in parallel with --workers N, and
sequentially for the small sizes. Printed per run: wall time, wall / wall(N=1), the
controller's CPU seconds and peak RSS, and where the time went (mean seconds per step).
The sandbox's hosts share this machine's cores with the controller; on real machines each
host brings its own CPU, so the host-side cost here (sshd, the Tentacle stand-in's Python
start-up) inflates the large-N figures. That is what `host CPU` shows.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

from octoboot import jobs
from octoboot.sandbox.control import Sandbox
from octoboot.settings import load_settings

STEPS = ("connect", "probe", "install", "identity", "configure", "register", "service", "health")


def child(project: Path, parallel: bool, workers: int) -> None:
    """Run one bootstrap and print its figures as JSON (runs in its own process)."""
    settings = load_settings(
        environ={
            "OCTOBOOT_STATE_DIR": str(project / ".octoboot"),
            "OCTOBOOT_MACHINES_DIR": str(project / "machines"),
        },
        dotenv_path=project / ".env",
    )
    started = time.monotonic()
    report = jobs.bootstrap(
        jobs.Selection(env="sandbox"),
        jobs.RunOptions(parallel=parallel, workers=workers, console=lambda line: None),
        settings,
    )
    wall = time.monotonic() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    steps: dict[str, list[float]] = {}
    for result in report.results:
        for step in result.steps:
            steps.setdefault(step.name, []).append(step.seconds)
    print(
        json.dumps(
            {
                "wall": wall,
                "cpu": usage.ru_utime + usage.ru_stime,
                "rss_mib": usage.ru_maxrss / 1024,
                "counts": report.counts(),
                "steps": {k: sum(v) / len(v) for k, v in steps.items()},
            }
        )
    )


def measure(size: int, install_seconds: float, parallel: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="octoboot-bench-") as tmp:
        project = Path(tmp)
        sandbox = Sandbox(project / ".sandbox")
        sandbox.up(size, install_seconds=install_seconds)
        try:
            sandbox.write_target_files(project / "machines", project / ".env")
            before = _host_cpu(sandbox)
            proc = subprocess.run(
                [sys.executable, "-m", "benchmarks.bootstrap", "--child", str(project),
                 "--workers", str(size), *(["--parallel"] if parallel else [])],
                capture_output=True, text=True, check=True,
                cwd=Path(__file__).resolve().parents[1],
            )  # fmt: skip
            figures = json.loads(proc.stdout.strip().splitlines()[-1])
            figures["host_cpu"] = _host_cpu(sandbox) - before
            return figures
        finally:
            sandbox.down()


def _host_cpu(sandbox: Sandbox) -> float:
    """CPU seconds used so far by every process of the sandbox's hosts (children included)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for host in sandbox.hosts():
        rec = sandbox.state()["hosts"][host.index - 1].get("process")
        if not rec:
            continue
        for pid in _tree(rec["pid"]):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total / ticks


def _tree(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        p, pp = map(int, line.split())
        children.setdefault(pp, []).append(p)
    found, stack = [], [pid]
    while stack:
        p = stack.pop()
        found.append(p)
        stack += children.get(p, [])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,10,30,100")
    parser.add_argument("--sequential-sizes", default="1,10")
    parser.add_argument("--install-seconds", type=float, default=5.0)
    parser.add_argument("--child", type=Path)
    parser.add_argument("--parallel", action="store_true")
    parser.add_argument("--workers", type=int, default=32)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.parallel, args.workers)
        return
    rows, base = [], None
    plan = [(n, False) for n in _sizes(args.sequential_sizes)]
    plan += [(n, True) for n in _sizes(args.sizes)]
    for size, parallel in plan:
        figures = measure(size, args.install_seconds, parallel)
        if parallel and size == 1:
            base = figures["wall"]
        rows.append(
            [
                size,
                f"parallel, {size} workers" if parallel else "sequential",
                f"{figures['wall']:.1f}",
                f"{figures['wall'] / base:.2f}" if base and parallel else "",
                f"{figures['cpu']:.1f}",
                f"{figures['host_cpu']:.1f}",
                f"{figures['rss_mib']:.0f}",
                ", ".join(f"{n} {s}" for s, n in figures["counts"].items()),
                " ".join(f"{s[:4]}={figures['steps'].get(s, 0):.2f}" for s in STEPS),
            ]
        )
        print(f"N={size} {'parallel' if parallel else 'sequential'}: {figures['wall']:.1f}s",
              file=sys.stderr, flush=True)  # fmt: skip
    headers = ["N", "mode", "wall s", "wall/wall(1)", "controller CPU s", "host CPU s",
               "peak RSS MiB", "outcome", "mean s per step"]  # fmt: skip
    print(f"install takes {args.install_seconds:g} s per machine")
    print(tabulate(rows, headers=headers))


def _sizes(text: str) -> list[int]:
    return [int(n) for n in text.split(",") if n.strip()]


if __name__ == "__main__":
    main()
