import errno
import os
import stat
import threading

import pytest

from octoboot import files
from octoboot.errors import ConfigError
from octoboot.files import StateWriteError, append, check_writable, open_append, write_atomic


def full_disk_after(monkeypatch, allowed: int) -> None:
    """os.write as on a disk with `allowed` bytes free: a short write, then ENOSPC."""
    real_write = os.write
    left = [allowed]

    def write(fd, data):
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = real_write(fd, bytes(data[: left[0]]))
        left[0] -= written
        return written

    monkeypatch.setattr(files.os, "write", write)


def test_write_atomic_writes_a_private_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "known_hosts"
    write_atomic(path, "one\n")
    write_atomic(path, b"two\n")
    assert path.read_text() == "two\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["known_hosts"]


def test_a_full_disk_leaves_the_old_file_whole_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "last.json"
    write_atomic(path, "old\n")
    full_disk_after(monkeypatch, 10)
    with pytest.raises(StateWriteError) as err:
        write_atomic(path, "x" * 100)
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["last.json"]
    assert str(err.value) == (
        f"cannot write {path}: No space left on device (free some space and run again)"
    )


def test_a_full_disk_on_a_new_file_leaves_nothing(tmp_path, monkeypatch):
    full_disk_after(monkeypatch, 0)
    with pytest.raises(StateWriteError):
        write_atomic(tmp_path / "web01.pfx", b"\x30" * 2000, replace=False)
    assert os.listdir(tmp_path) == []


def test_without_replace_the_first_writer_wins(tmp_path):
    path = tmp_path / "web01.pfx"
    write_atomic(path, "first", replace=False)
    with pytest.raises(FileExistsError):
        write_atomic(path, "second", replace=False)
    assert path.read_text() == "first"
    assert os.listdir(tmp_path) == ["web01.pfx"]


def test_append_is_cut_back_to_whole_lines_when_the_disk_fills(tmp_path, monkeypatch):
    path = tmp_path / "web01.log"
    fd = open_append(path)
    append(fd, b"line one\n")
    full_disk_after(monkeypatch, 4)
    with pytest.raises(OSError):
        append(fd, b"line two\n")
    os.close(fd)
    assert path.read_bytes() == b"line one\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_check_writable_makes_a_private_state_dir(tmp_path):
    state = tmp_path / "state"
    check_writable(state)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert os.listdir(state) == []


def test_a_state_dir_that_cannot_be_written_is_one_config_error(tmp_path, monkeypatch):
    full_disk_after(monkeypatch, 0)
    with pytest.raises(ConfigError) as err:
        check_writable(tmp_path)
    assert str(err.value) == (
        f"cannot write to the state directory {tmp_path}: No space left on device "
        "(free some space and run again)"
    )
    assert os.listdir(tmp_path) == []


def test_two_runs_checking_the_state_dir_at_once_do_not_collide(tmp_path):
    # Two runs started together each probe the directory; a shared probe name let one
    # remove the other's file mid-check (FileNotFoundError, a traceback from `inv`).
    errors: list[BaseException] = []

    def check_often() -> None:
        try:
            for _ in range(150):
                check_writable(tmp_path)
        except BaseException as exc:  # collected, so the main thread can assert on it
            errors.append(exc)

    threads = [threading.Thread(target=check_often) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert os.listdir(tmp_path) == []


def test_a_full_disk_leaves_the_last_run_record_as_it_was(tmp_path, monkeypatch):
    # --retry-failed reads this record; a truncated one would stop every later retry.
    from octoboot.inventory import load_inventory
    from octoboot.locks import Locks
    from octoboot.report import MachineResult, RunReport, State
    from octoboot.run import last_failures, record_outcome

    (tmp_path / "qa.toml").write_text(
        'roles = ["web"]\n[[machines]]\nname = "web01"\n[[machines]]\nname = "web02"\n'
    )
    machines = load_inventory(tmp_path).select("qa")
    state = tmp_path / "state"

    def record(*states: State) -> None:
        pairs = enumerate(zip(machines, states, strict=True), 1)
        rows = [MachineResult(n, m.name, "QA", s) for n, (m, s) in pairs]
        locks = Locks(state, "bootstrap")
        try:
            record_outcome(state, RunReport("bootstrap", rows, 1.0, "/runs/1"), machines, locks)
        finally:
            locks.release()

    record(State.FAILED, State.CHANGED)
    path = state / "last-run" / "qa.json"
    before = path.read_bytes()
    full_disk_after(monkeypatch, 10)
    with pytest.raises(StateWriteError, match=r"qa\.json: No space left on device"):
        record(State.CHANGED, State.FAILED)
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == ["qa.json"]  # no temporary left beside it
    assert last_failures(state, "qa") == ["web01"]
