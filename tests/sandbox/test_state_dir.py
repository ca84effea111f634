"""The state directory on bad days: two runs at once, a mistyped PFX password, a damaged
identity, a lost or damaged known_hosts, a full or read-only disk. Real sshd and HTTP, real
concurrent `inv` processes, and a real full disk (a tiny tmpfs made and unmounted here)."""

import dataclasses
import errno
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from octoboot import certificates
from octoboot.bootstrap import bootstrap
from octoboot.identity import VERIFIER
from octoboot.locks import WAIT_SECONDS
from octoboot.report import EXIT_FAILED, EXIT_OK, State
from octoboot.run import RunOptions, Selection
from octoboot.settings import Secret
from octoboot.status import status
from tests.sandbox.project import by_name, inv, inv_started, octopus_machines, quiet, tree_digest

RACED = ("sbx01", "sbx02", "sbx03")  # two runs at once, then the tests that follow on them
FRESH = ("sbx04", "sbx05")  # bootstrapped only by the full-disk test, onto its own disk
# Long enough that the first run still holds the machines when the second stops waiting.
SLOW_INSTALL = WAIT_SECONDS + 5


@pytest.fixture(scope="module")
def sandbox(sandbox_factory):
    return sandbox_factory(5, install_seconds=1)


def host_flags(names) -> list[str]:
    return [flag for name in names for flag in ("--host", name)]


@pytest.fixture(scope="module")
def raced(sandbox, settings):
    """Two `inv bootstrap` started together on the same three new machines, and, while
    the first holds them, a `status` and a `--dry-run` (read-only: they take no lock)."""
    for name in RACED:
        sandbox.set_faults(name, install_seconds=SLOW_INSTALL)
    args = ("bootstrap", *host_flags(RACED), "--parallel", "--format", "json")
    started: list[subprocess.Popen] = []
    try:
        started += [inv_started(settings, *args) for _ in range(2)]
        locks = settings.state_dir / "locks"
        deadline = time.monotonic() + 60
        while not (locks.is_dir() and any(locks.glob("run-*.json"))):
            if all(proc.poll() is not None for proc in started):
                break  # both ended without ever holding the machines: the test says how
            assert time.monotonic() < deadline, "no run took the machines"
            time.sleep(0.05)
        started.append(inv_started(settings, "status", *host_flags(RACED), "--format", "json"))
        started.append(inv_started(settings, *args, "--dry-run"))
        outputs = [proc.communicate(timeout=300) for proc in started]
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        for name in RACED:
            sandbox.set_faults(name, install_seconds=1)
    return [
        (proc.pid, proc.returncode, out, err)
        for proc, (out, err) in zip(started, outputs, strict=True)
    ]


def test_two_runs_at_once_never_share_a_machine(raced, settings, octopus):
    (pid_a, code_a, out_a, _), (pid_b, code_b, out_b, _) = raced[:2]
    for _, _, out, err in raced:
        assert "Traceback" not in err and "internal error" not in out + err, err
    runs = {pid_a: (code_a, json.loads(out_a)), pid_b: (code_b, json.loads(out_b))}
    winner = next(pid for pid, (_, data) in runs.items() if data["exit_code"] == EXIT_OK)
    loser = pid_b if winner == pid_a else pid_a
    assert runs[winner][0] == EXIT_OK and runs[loser][0] == EXIT_FAILED
    assert {m["machine"]: m["state"] for m in runs[winner][1]["machines"]} == dict.fromkeys(
        RACED, "changed"
    )
    holder = re.compile(rf"another octoboot run \(pid {winner}, started [0-9: -]+ UTC\) holds them")
    for row in runs[loser][1]["machines"]:
        assert row["state"] == "skipped" and holder.fullmatch(row["reason"]), row
    # Every machine once in Octopus, with the one identity the store holds for it.
    records = octopus_machines(octopus)
    assert sorted(name for name in records if name in RACED) == sorted(RACED)
    password = settings.pfx_password().reveal()
    store = settings.state_dir / "identities"
    assert sorted(p.name for p in store.iterdir()) == sorted(
        [VERIFIER, *(f"{name}.pfx" for name in RACED)]
    )
    for name in RACED:
        _, cert = certificates.load_pfx((store / f"{name}.pfx").read_bytes(), password)
        assert records[name]["Endpoint"]["Thumbprint"] == certificates.thumbprint(cert)
        assert records[name]["HealthStatus"] == "Healthy"
    assert not list((settings.state_dir / "locks").glob("run-*.json"))  # released


def test_read_only_runs_take_no_lock(raced):
    for _, _, out, _ in raced[2:]:
        for row in json.loads(out)["machines"]:
            assert row["state"] != "skipped" and "another octoboot run" not in row["reason"]


def test_a_lost_known_hosts_is_said_in_the_summary(raced, sandbox, settings):
    known_hosts = sandbox.root / "known_hosts"  # the sandbox inventory's [ssh] known_hosts
    known_hosts.unlink()
    looked = inv(settings, "status", *host_flags(RACED))
    assert looked.returncode == EXIT_OK, looked.stdout + looked.stderr
    assert "3 SSH host key(s) seen for the first time and trusted (for this run only)" in (
        looked.stdout
    )
    assert not known_hosts.exists()
    run = inv(settings, "bootstrap", *host_flags(RACED), "--parallel")
    assert run.returncode == EXIT_OK, run.stdout + run.stderr
    assert "3 SSH host key(s) seen for the first time and trusted (added to known_hosts)" in (
        run.stdout
    )
    again = inv(settings, "status", *host_flags(RACED))
    assert "host key" not in again.stdout


def test_a_damaged_known_hosts_line_is_one_line_naming_it(raced, sandbox, settings):
    path = sandbox.root / "known_hosts"
    good = path.read_text()
    lines = good.splitlines()
    lines[1] = lines[1][:-9]  # cut off mid-key
    path.write_text("\n".join(lines) + "\n")
    try:
        proc = inv(settings, "status", *host_flags(RACED))
    finally:
        path.write_text(good)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"octoboot: {path} line 2 is damaged (its key cannot be read): restore it, or delete "
        "that line (octoboot then trusts the key that host shows next: check it)"
    ]


@pytest.mark.parametrize("verifier", [True, False], ids=["verifier", "store-before-verifiers"])
def test_a_mistyped_pfx_password_is_one_line_and_mints_nothing(raced, settings, tmp_path, verifier):
    state = tmp_path / "state"
    shutil.copytree(settings.state_dir / "identities", state / "identities")
    (state / "identities" / "sbx03.pfx").unlink()  # sbx03 is new to this store
    if not verifier:
        (state / "identities" / VERIFIER).unlink()
    before = tree_digest(state)
    mistyped = dataclasses.replace(
        settings, state_dir=state, pfx_secret=Secret(settings.pfx_password().reveal() + "x")
    )
    proc = inv(mistyped, "bootstrap", "--host", "sbx03")
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "OCTOBOOT_PFX_PASSWORD is not the password of the identity store" in lines[0]
    assert tree_digest(state) == before and not (state / "runs").exists()


def test_a_damaged_identity_fails_its_machine_only_and_what_it_says_to_do_works(
    raced, settings, octopus
):
    pfx = settings.state_dir / "identities" / "sbx02.pfx"
    before = octopus_machines(octopus)["sbx02"]
    pfx.write_bytes(b"")  # as a full disk left it before octoboot wrote files whole
    damaged = f"the identity {pfx} is damaged (it is empty): restore it from a backup"
    advice = "run `inv deregister --host sbx02 --forget-identity`"

    run = inv(settings, "bootstrap", *host_flags(RACED), "--format", "json")
    assert run.returncode == EXIT_FAILED, run.stderr
    rows = {row["machine"]: row for row in json.loads(run.stdout)["machines"]}
    assert rows["sbx01"]["state"] == rows["sbx03"]["state"] == "unchanged"
    assert rows["sbx02"]["state"] == "failed" and rows["sbx02"]["failed_step"] == "identity"
    assert damaged in rows["sbx02"]["reason"] and advice in rows["sbx02"]["reason"]
    assert "OCTOBOOT_PFX_PASSWORD" not in run.stdout + run.stderr

    looked = inv(settings, "status", *host_flags(RACED), "--format", "json")
    rows = {row["machine"]: row for row in json.loads(looked.stdout)["machines"]}
    assert rows["sbx01"]["state"] == rows["sbx03"]["state"] == "ok"
    assert rows["sbx02"]["failed_step"] == "identity" and damaged in rows["sbx02"]["reason"]

    forgot = inv(settings, "deregister", "--host", "sbx02", "--forget-identity")
    assert forgot.returncode == EXIT_OK, forgot.stdout + forgot.stderr
    assert f"{before['Id']} kept" in forgot.stdout and not pfx.exists()
    back = inv(settings, "bootstrap", "--host", "sbx02", "--take-over", "--format", "json")
    assert back.returncode == EXIT_OK, back.stdout + back.stderr
    after = octopus_machines(octopus)["sbx02"]
    _, cert = certificates.load_pfx(pfx.read_bytes(), settings.pfx_password().reveal())
    assert after["Id"] == before["Id"] and after["HealthStatus"] == "Healthy"
    assert after["Endpoint"]["Thumbprint"] == certificates.thumbprint(cert)
    assert after["Endpoint"]["Thumbprint"] != before["Endpoint"]["Thumbprint"]


# --- a full or read-only disk -----------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs for the state directory, unmounted at the end."""
    mount = tmp_path / "state"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount)],
                   check=True)  # fmt: skip
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def fill(disk: Path) -> Path:
    """Fill disk to the last byte; the file that does it."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, bytes(65536))
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_fails_the_machine_it_hits_and_leaves_nothing_half_written(
    sandbox, settings, small_disk
):
    on_disk = dataclasses.replace(settings, state_dir=small_disk)
    filler: list[Path] = []
    at_sbx05: list[bool] = []

    def console(line: str) -> None:
        # Sequential run: the disk fills once sbx05 is installed, and is freed when sbx05 ends.
        if line.startswith("[2] sbx05 ("):
            at_sbx05.append(True)
        elif at_sbx05 and line.startswith("  install: changed") and not filler:
            filler.append(fill(small_disk))
        elif line.startswith("[2] sbx05:"):
            filler[0].unlink()

    report = bootstrap(Selection(hosts=FRESH), RunOptions(console=console), on_disk)
    rows = by_name(report)
    identities = small_disk / "identities"
    assert filler and rows["sbx04"].state == State.CHANGED, report.table()
    assert rows["sbx05"].state == State.FAILED and rows["sbx05"].failed_step == "identity"
    assert rows["sbx05"].reason == (
        f"cannot write {identities / 'sbx05.pfx'}: No space left on device "
        "(free some space and run again)"
    )
    assert sorted(os.listdir(identities)) == [VERIFIER, "sbx04.pfx"]  # no 0-byte PFX, no temp
    run_dir = Path(report.run_dir)
    written = json.loads((run_dir / "report.json").read_text())
    assert [m["machine"] for m in written["machines"]] == list(FRESH)
    assert (run_dir / "sbx05.log").read_text().endswith("\n")

    again = bootstrap(Selection(hosts=FRESH), quiet(parallel=False), on_disk)
    assert {r.machine: r.state for r in again.results} == {
        "sbx04": State.UNCHANGED,
        "sbx05": State.CHANGED,
    }, again.table()


def test_a_report_the_disk_cannot_take_is_said_on_the_terminal(sandbox, settings, small_disk):
    on_disk = dataclasses.replace(settings, state_dir=small_disk)
    lines: list[str] = []

    def console(line: str) -> None:
        lines.append(line)
        if line.startswith("[1] sbx04 ("):
            fill(small_disk)

    report = status(Selection(hosts=("sbx04",)), RunOptions(console=console), on_disk)
    row = report.results[0]
    assert row.state == State.FAILED and "cannot write its log" in row.reason
    assert (
        f"octoboot: the report was not written (cannot write {report.run_dir}/report.json: "
        "No space left on device (free some space and run again))" in lines
    )
    assert not (Path(report.run_dir) / "report.json").exists()


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_a_full_or_read_only_state_directory_at_the_start_is_one_line(
    sandbox, settings, small_disk, fault
):
    if fault == "full":
        fill(small_disk)
        why = "No space left on device (free some space and run again)"
    else:
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
        why = (
            "Read-only file system (make it writable, or set OCTOBOOT_STATE_DIR to another folder)"
        )
    on_disk = dataclasses.replace(settings, state_dir=small_disk)
    for command in ("bootstrap", "status"):
        proc = inv(on_disk, command, *host_flags(FRESH))
        assert proc.returncode == 2 and proc.stdout == "", proc.stderr
        assert proc.stderr.strip().splitlines() == [
            f"octoboot: cannot write to the state directory {small_disk}: {why}"
        ]
