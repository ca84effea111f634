import os
import re
import subprocess
import sys
import threading

from octoboot.locks import Locks

HOLDER = re.compile(r"another octoboot run \(pid (\d+), started [0-9: -]+ UTC\) holds them")


def test_a_second_run_gets_the_free_machines_and_is_told_who_holds_the_others(tmp_path):
    first, second = Locks(tmp_path, "bootstrap"), Locks(tmp_path, "register")
    try:
        assert first.acquire_machines(["web01", "WEB02"]) == {}
        waited: list[str] = []
        busy = second.acquire_machines(["web02", "web03"], wait=0.1, on_wait=waited.append)
        assert list(busy) == ["web02"] and second.machines == {"web03"}
        match = HOLDER.fullmatch(busy["web02"])
        assert match and int(match[1]) == os.getpid()
        assert waited and "web02" in waited[0]
        first.release()
        assert second.acquire_machines(["web02"], wait=0) == {}
    finally:
        first.release()
        second.release()


def test_a_machine_freed_while_waiting_is_taken(tmp_path):
    first, second = Locks(tmp_path, "bootstrap"), Locks(tmp_path, "bootstrap")
    first.acquire_machines(["web01"])
    releasing = threading.Timer(0.1, first.release)
    releasing.start()
    try:
        assert second.acquire_machines(["web01"], wait=10) == {}
    finally:
        releasing.join()
        second.release()


def test_the_lock_of_a_killed_run_frees_itself(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, pathlib\n"
            "from octoboot.locks import Locks\n"
            "Locks(pathlib.Path(sys.argv[1]), 'bootstrap').acquire_machines(['web01'])\n"
            "print('held', flush=True)\n"
            "sys.stdin.read()\n"
        ), str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == "held\n"
        locks = Locks(tmp_path, "bootstrap")
        busy = locks.acquire_machines(["web01"], wait=0)
        assert f"pid {holder.pid}," in busy["web01"]
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
        holder.stdin.close()
    late = Locks(tmp_path, "bootstrap")
    try:
        assert locks.acquire_machines(["web01"], wait=0) == {}
        # The dead run's note of what it held goes when a run next looks for holders.
        busy = late.acquire_machines(["web01"], wait=0)
        assert f"pid {holder.pid}," not in busy["web01"]
        notes = [p.name for p in (tmp_path / "locks").glob("run-*.json")]
        assert len(notes) == 1 and notes[0].startswith(f"run-{os.getpid()}-")
    finally:
        locks.release()
        late.release()
