"""Benchmark: bootstrap N fresh sandbox machines under a real Octopus Server's limits.

    python -m benchmarks.bootstrap --sizes 1,30,100 --install-seconds 60

For each N and each way of checking health (`shared` Health tasks, octoboot's way, and
`per-machine`, one task per machine as before, OCTOBOOT_HEALTH_TASKS), a new sandbox of N
hosts comes up with the stand-ins' defaults (task cap 5, a Health task of 3 s and a little
more per machine, the API rate limit, 0.5 s per Tentacle command) and each install taking
`--install-seconds`. One bootstrap runs in parallel (--workers N) in a child process, so
that its CPU time is its own, then the same bootstrap again, with nothing to change.

Printed per run: wall time and its ratio to N = 1, the health phase (the longest `health`
step) and how many Health tasks started, the API requests per machine apart from health
tasks (starting, polling and reading their results), the 429s received, and the CPU seconds per
machine of the controller, of the hosts (sshd, the Tentacle stand-in and its service) and
of the Octopus stand-in. The load average before each run is printed with it: this
machine's two cores run the hosts too, and other work.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

from benchmarks.measure import host_cpu, load, run_child, server_cpu
from octoboot.bootstrap import bootstrap
from octoboot.run import RunOptions, Selection
from octoboot.sandbox.control import Sandbox
from octoboot.sandbox.standin_settings import StandInSettings
from octoboot.settings import HEALTH_TASKS, load_settings


def child(project: Path, workers: int, health_tasks: str) -> None:
    """Run one bootstrap and print its figures as JSON (runs in its own process)."""
    settings = load_settings(
        environ={
            "OCTOBOOT_STATE_DIR": str(project / ".octoboot"),
            "OCTOBOOT_MACHINES_DIR": str(project / "machines"),
            "OCTOBOOT_HEALTH_TASKS": health_tasks,
        },
        dotenv_path=project / ".env",
    )
    started = time.monotonic()
    report = bootstrap(
        Selection(env="sandbox"),
        RunOptions(parallel=True, workers=workers, console=lambda line: None),
        settings,
    )
    wall = time.monotonic() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    health = [s.seconds for r in report.results for s in r.steps if s.name == "health"]
    print(
        json.dumps(
            {
                "wall": wall,
                "cpu": usage.ru_utime + usage.ru_stime,
                "counts": report.counts(),
                "health": max(health, default=0.0),
            }
        )
    )


def run_once(project: Path, sandbox: Sandbox, size: int, health_tasks: str) -> dict:
    """One bootstrap in a child process, with what it cost the hosts and Octopus and the
    requests Octopus received meanwhile."""
    requests = sandbox.root / "octopus" / "requests.jsonl"
    seen = len(requests.read_text().splitlines()) if requests.exists() else 0
    tasks_before = {t["Id"] for t in health_tasks_run(sandbox)}
    hosts, server, loaded = host_cpu(sandbox), server_cpu(sandbox), load()
    proc = run_child(
        [sys.executable, "-m", "benchmarks.bootstrap", "--child", str(project),
         "--workers", str(size), "--health-tasks", health_tasks],
        timeout=1800,
    )  # fmt: skip
    if proc.code:
        raise SystemExit(f"the bootstrap of {size} machines failed:\n{proc.output[-3000:]}")
    figures = json.loads(proc.output.strip().splitlines()[-1])
    made = [json.loads(line) for line in requests.read_text().splitlines()[seen:]]
    # Health tasks: started, polled, their queue position and results (the machines'
    # records read once per task, `machines?ids=`).
    health = [r for r in made if "/tasks" in r["path"] or "/machines?ids=" in r["path"]]
    figures.update(
        controller=proc.cpu / size,
        hosts=(host_cpu(sandbox) - hosts) / size,
        octopus=(server_cpu(sandbox) - server) / size,
        load=loaded,
        requests=(len(made) - len(health)) / size,
        health_requests=len(health),
        tasks=sum(1 for r in health if r["method"] == "POST"),
        throttled=sum(1 for r in made if r["status"] == 429),
        task_seconds=[
            seconds for t in health_tasks_run(sandbox) if t["Id"] not in tasks_before
            for seconds in [ran_seconds(t)] if seconds is not None
        ],
    )  # fmt: skip
    return figures


def spread(seconds: list[float]) -> str:
    """min-max of the Health tasks' run times."""
    return f"{min(seconds):.1f}-{max(seconds):.1f}" if seconds else ""


def health_tasks_run(sandbox: Sandbox) -> list[dict]:
    """The Health tasks the Octopus stand-in holds (its state file, as its API serves them)."""
    state = sandbox.root / "octopus" / "octopus.json"
    return json.loads(state.read_text())["tasks"] if state.exists() else []


def ran_seconds(task: dict) -> float | None:
    """How long a task ran, by the server's clock (None: it never ran or has not ended)."""
    if not task.get("StartTime") or not task.get("CompletedTime"):
        return None
    start, end = (dt.datetime.fromisoformat(task[k]) for k in ("StartTime", "CompletedTime"))
    return (end - start).total_seconds()


def measure(size: int, install_seconds: float, health_tasks: str) -> tuple[dict, dict]:
    """(first run, unchanged rerun) on a new sandbox of `size` machines."""
    with tempfile.TemporaryDirectory(prefix="octoboot-bench-") as tmp:
        project = Path(tmp)
        sandbox = Sandbox(project / ".sandbox")
        sandbox.up(size, install_seconds=install_seconds, settings=StandInSettings())
        try:
            sandbox.write_target_files(project / "machines", project / ".env")
            first = run_once(project, sandbox, size, health_tasks)
            return first, run_once(project, sandbox, size, health_tasks)
        finally:
            sandbox.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,30,100")
    parser.add_argument("--install-seconds", type=float, default=60.0)
    parser.add_argument("--health", default=",".join(HEALTH_TASKS), help="shared,per-machine")
    parser.add_argument("--child", type=Path)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--health-tasks", choices=HEALTH_TASKS, default="shared")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.workers, args.health_tasks)
        return
    task_seconds = StandInSettings().health_task_seconds
    rows = []
    for health_tasks in args.health.split(","):
        base: dict | None = None
        for size in [int(n) for n in args.sizes.split(",")]:
            first, again = measure(size, args.install_seconds, health_tasks)
            base = base or first
            rows.append([
                health_tasks, size, f"{first['wall']:.1f}", f"{first['wall'] / base['wall']:.2f}",
                f"{first['health']:.1f}",
                f"{(first['health'] - base['health']) / task_seconds(1):+.1f}",
                first["tasks"], spread(first["task_seconds"]),
                f"{first['requests']:.2f}", f"{again['requests']:.2f}",
                f"{first['health_requests']}/{again['health_requests']}",
                f"{first['throttled']}/{again['throttled']}",
                f"{first['controller']:.2f}", f"{first['hosts']:.2f}", f"{first['octopus']:.3f}",
                f"{again['wall']:.1f}", f"{again['controller']:.2f}", f"{again['hosts']:.2f}",
                f"{first['load']}/{again['load']}",
                ", ".join(f"{n} {s}" for s, n in first["counts"].items()),
            ])  # fmt: skip
            print(f"{health_tasks} N={size}: {first['wall']:.1f} s, rerun {again['wall']:.1f} s",
                  file=sys.stderr, flush=True)  # fmt: skip
    headers = [
        "health tasks", "N", "wall s", "/ N=1", "health s", "health - N=1 (tasks)",
        "tasks", "task ran s", "API req/m", "rerun API req/m", "health-task req", "429s",
        "ctrl CPU/m", "host CPU/m", "Octopus CPU/m", "rerun wall s", "rerun ctrl CPU/m",
        "rerun host CPU/m", "load", "outcome",
    ]  # fmt: skip
    print(f"install takes {args.install_seconds:g} s per machine; stand-ins: "
          f"{'; '.join(StandInSettings().describe())}")  # fmt: skip
    print(tabulate(rows, headers=headers))


if __name__ == "__main__":
    main()
