import json
import signal

from octoboot.report import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STOPPED,
    EXIT_TERMINATED,
    EXIT_UNREACHABLE,
    MachineResult,
    RunReport,
    State,
)


def result(job_id, state, **kw):
    return MachineResult(job_id, f"web{job_id:02d}", "QA", state=state, **kw)


def test_exit_codes_are_bits_for_failed_and_unreachable():
    ok = [result(1, State.CHANGED), result(2, State.UNCHANGED)]
    assert RunReport("bootstrap", ok, 1.0).exit_code == EXIT_OK
    assert RunReport("b", [*ok, result(3, State.FAILED)], 1).exit_code == EXIT_FAILED
    assert RunReport("b", [*ok, result(3, State.UNREACHABLE)], 1).exit_code == EXIT_UNREACHABLE
    assert RunReport("b", [result(3, State.TIMED_OUT)], 1).exit_code == EXIT_UNREACHABLE
    both = [result(1, State.FAILED), result(2, State.TIMED_OUT)]
    assert RunReport("b", both, 1).exit_code == EXIT_FAILED | EXIT_UNREACHABLE
    assert RunReport("b", ok, 1, interrupted=signal.SIGINT).exit_code == EXIT_INTERRUPTED == 130


def test_a_run_stopped_by_sigterm_exits_143_whatever_the_machines_did():
    rows = [result(1, State.CHANGED), result(2, State.INTERRUPTED)]
    report = RunReport("b", rows, 1, interrupted=signal.SIGTERM)
    assert report.exit_code == EXIT_TERMINATED == 143
    assert json.loads(report.to_json())["exit_code"] == 143


def test_table_has_a_row_per_machine_and_a_summary():
    report = RunReport(
        "bootstrap",
        [
            result(1, State.CHANGED, octopus_id="Machines-1", thumbprint="AB" * 20),
            result(2, State.FAILED, failed_step="health", reason="Octopus says\nUnavailable"),
        ],
        12.34,
        run_dir="/x/runs/1",
    )
    text = report.table()
    lines = text.splitlines()
    assert "web01" in lines[2] and "Machines-1" in lines[2] and "ABABABAB…" in lines[2]
    assert "health" in lines[3] and "Octopus says Unavailable" in lines[3]
    assert "2 machine(s): 1 changed, 1 failed; wall time 12.3s; exit code 1" in text
    assert "logs: /x/runs/1" in text


def test_report_txt_holds_the_table_the_terminal_shows(tmp_path, monkeypatch):
    report = RunReport("exec", [result(1, State.OK), result(2, State.FAILED)], 2.5)
    report.write(tmp_path)
    assert (tmp_path / "report.txt").read_text() == report.table() + "\n"
    # made once, at the run's end: printing it does not build the table again
    monkeypatch.setattr(RunReport, "table", lambda self: "built again")
    assert report.text + "\n" == (tmp_path / "report.txt").read_text()


def test_json_carries_every_field():
    report = RunReport("bootstrap", [result(1, State.TIMED_OUT, failed_step="install")], 2.0)
    data = json.loads(report.to_json())
    assert data["exit_code"] == EXIT_UNREACHABLE
    assert data["counts"] == {"timed out": 1}
    machine = data["machines"][0]
    assert machine["state"] == "timed out" and machine["failed_step"] == "install"
    assert machine["job_id"] == 1 and machine["machine"] == "web01"


def test_a_machine_skipped_because_another_run_holds_it_is_not_success():
    held = result(2, State.SKIPPED, reason="another octoboot run (pid 7, started T) holds them")
    assert RunReport("b", [result(1, State.CHANGED), held], 1).exit_code == EXIT_FAILED


def test_the_summary_says_how_many_host_keys_were_trusted_for_the_first_time():
    rows = [result(1, State.UNCHANGED)]
    assert "host key" not in RunReport("b", rows, 1).table()
    kept = RunReport("b", rows, 1, host_keys_learned=3)
    assert "3 SSH host key(s) seen for the first time and trusted (added to known_hosts)" in (
        kept.table()
    )
    assert json.loads(kept.to_json())["host_keys_learned"] == 3
    looked = RunReport("status", rows, 1, host_keys_learned=1, host_keys_kept=False)
    assert "1 SSH host key(s) seen for the first time and trusted (for this run only)" in (
        looked.table()
    )


def test_control_characters_from_hosts_are_escaped_in_every_cell_and_line():
    from octoboot.report import one_line, printable

    hostile = "ok\x1b]0;owned\x07\x1b[2J\u202eevil\x9b"
    assert one_line(hostile) == "ok\\x1b]0;owned\\x07\\x1b[2J\\u202eevil\\x9b"
    assert printable("a\tb\nc\r", keep="\n\t") == "a\tb\nc\\x0d"
    assert one_line("x" * 300, 100) == "x" * 99 + "…"
    report = RunReport(
        "exec", [result(1, State.OK, octopus_id=hostile, reason=hostile, failed_step="\x07")], 1
    )
    table = report.table()
    assert not any(c in table for c in "\x1b\x07\u202e\x9b"), table
    assert "\\x1b[2J" in table


def test_a_run_stopped_early_says_so_and_its_skipped_rows_are_not_failures():
    stopped_rows = [result(1, State.UNREACHABLE), result(2, State.SKIPPED, reason="--max-fail")]
    assert RunReport("b", stopped_rows, 1, stopped=True).exit_code == (
        EXIT_UNREACHABLE | EXIT_STOPPED
    )
    assert RunReport("b", stopped_rows, 1).exit_code == EXIT_UNREACHABLE | EXIT_FAILED
