"""Benchmark: `inv exec` on N sandbox hosts in parallel, each printing M MB of output.

    python -m benchmarks.exec_output --hosts 6 --sizes-mb 0,1,10,50

A sandbox of N hosts is brought up once; for each size one `exec` runs in a child process
(so that its wall time, CPU time and peak RSS are its own), with one worker per host. The
command prints M MB of 70-character lines (`yes ... | head -c`). Printed per size: wall
time, the controller's CPU seconds and peak RSS, the machines' states, the bytes each log
received, and the size of report.json. Size 0 runs `true`: the baseline of the same run.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

from octoboot.exec import exec_command
from octoboot.run import RunOptions, Selection
from octoboot.sandbox.control import Sandbox
from octoboot.settings import load_settings

LINE = "octoboot exec output benchmark: one line of seventy characters, or so"


def command(megabytes: float) -> str:
    if not megabytes:
        return "true"
    return f"yes '{LINE}' | head -c {int(megabytes * 1_000_000)}"


def child(project: Path, hosts: int, megabytes: float) -> None:
    """Run one exec and print its figures as JSON (runs in its own process)."""
    settings = load_settings(
        environ={
            "OCTOBOOT_STATE_DIR": str(project / ".octoboot"),
            "OCTOBOOT_MACHINES_DIR": str(project / "machines"),
        },
        dotenv_path=project / ".env",
    )
    started = time.monotonic()
    report = exec_command(
        Selection(env="sandbox"),
        RunOptions(parallel=True, workers=hosts, console=lambda line: None),
        settings,
        command=command(megabytes),
    )
    wall = time.monotonic() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    logged = [int(r.facts.get("stdout_bytes", -1)) for r in report.results]
    print(
        json.dumps(
            {
                "wall": wall,
                "cpu": usage.ru_utime + usage.ru_stime,
                "rss_mib": usage.ru_maxrss / 1024,
                "counts": report.counts(),
                "bytes": sorted(set(logged)),
                "log_mib": sum(Path(r.log).stat().st_size for r in report.results if r.log) / 2**20,
                "json_kib": (Path(report.run_dir) / "report.json").stat().st_size / 1024,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=6)
    parser.add_argument("--sizes-mb", default="0,1,10,50")
    parser.add_argument("--child", type=Path)
    parser.add_argument("--megabytes", type=float, default=0)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.hosts, args.megabytes)
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="octoboot-exec-output-") as tmp:
        project = Path(tmp)
        sandbox = Sandbox(project / ".sandbox")
        sandbox.up(args.hosts, install_seconds=0)
        try:
            sandbox.write_target_files(project / "machines", project / ".env")
            for megabytes in [float(n) for n in args.sizes_mb.split(",")]:
                proc = subprocess.run(
                    [sys.executable, "-m", "benchmarks.exec_output", "--child", str(project),
                     "--hosts", str(args.hosts), "--megabytes", str(megabytes)],
                    capture_output=True, text=True, check=True,
                    cwd=Path(__file__).resolve().parents[1],
                )  # fmt: skip
                f = json.loads(proc.stdout.strip().splitlines()[-1])
                states = ", ".join(f"{n} {s}" for s, n in f["counts"].items())
                rows.append([f"{args.hosts} x {megabytes:g} MB", f"{f['wall']:.1f}",
                             f"{f['cpu']:.1f}", f"{f['rss_mib']:.0f}", states,
                             " ".join(map(str, f["bytes"])), f"{f['log_mib']:.0f}",
                             f"{f['json_kib']:.0f}"])  # fmt: skip
        finally:
            sandbox.down()
    print(tabulate(rows, headers=["output", "wall s", "CPU s", "peak RSS MiB", "states",
                                  "bytes per host", "logs MiB", "report.json KiB"]))  # fmt: skip


if __name__ == "__main__":
    main()
