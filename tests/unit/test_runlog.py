import errno
import os
import stat

from octoboot import files
from octoboot.runlog import MASK, MachineLog, Masker, new_run_dir


def test_masker_hides_every_secret_longest_first():
    mask = Masker(["API-KEY123", "API-KEY", ""])
    assert mask("key=API-KEY123 and API-KEY") == f"key={MASK} and {MASK}"


def test_machine_log_is_private_masked_and_echoes(tmp_path):
    run_dir = new_run_dir(tmp_path, "bootstrap")
    echoed = []
    log = MachineLog(run_dir / "web01.log", Masker(["s3cret"]), echo=echoed.append)
    log.write("$ run --password s3cret\nline two")
    log.write("quiet", echo=False)
    log.close()
    text = (run_dir / "web01.log").read_text()
    assert "s3cret" not in text and MASK in text and "line two" in text and "quiet" in text
    assert echoed == [f"$ run --password {MASK}\nline two"]
    assert stat.S_IMODE((run_dir / "web01.log").stat().st_mode) == 0o600
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700


def test_a_log_the_disk_cannot_take_says_why_and_keeps_whole_lines(tmp_path, monkeypatch):
    path = tmp_path / "web01.log"
    log = MachineLog(path, Masker())
    log.write("--- connect")
    assert log.failure is None

    def full(fd, data):
        os.ftruncate(fd, os.fstat(fd).st_size + 3)  # a few bytes made it before the error
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "write", full)
    log.write("--- probe")  # never raises where the machine's work is
    log.write("after")
    log.close()
    assert log.failure == (
        f"cannot write its log {path}: No space left on device (free some space and run again)"
    )
    assert path.read_text().endswith("--- connect\n")
