"""Cattle life cycle on the sandbox: rebuilt machines come back as themselves, inventory
changes update records in place, deregister, dry run, exec and retry of failures."""

import os
import re
import secrets
import threading
from pathlib import Path

import pytest

from octoboot.bootstrap import bootstrap, install
from octoboot.deregister import deregister
from octoboot.exec import exec_command
from octoboot.report import EXIT_FAILED, EXIT_OK, State
from octoboot.run import RunOptions, Selection
from tests.sandbox.project import (
    by_name,
    inv,
    octopus_machines,
    quiet,
    request_count,
    tree_digest,
    writes_since,
)

ALL = Selection(env="sandbox")


@pytest.fixture(scope="module")
def sandbox(sandbox_factory):
    return sandbox_factory(4, install_seconds=0.5)


@pytest.fixture(scope="module")
def bootstrapped(sandbox, settings):
    report = bootstrap(ALL, quiet(), settings)
    assert report.exit_code == EXIT_OK, report.table()
    return report


def test_a_rebuilt_machine_comes_back_as_itself(bootstrapped, sandbox, settings, octopus):
    before = octopus_machines(octopus)["sbx03"]
    sandbox.rebuild_host("sbx03")

    refused = bootstrap(Selection(hosts=("sbx03",)), quiet(), settings)
    row = refused.results[0]
    assert row.state == State.FAILED and row.failed_step == "connect"
    assert "host key changed" in row.reason and "--accept-new-host-key --host sbx03" in row.reason
    assert row.reason.count("SHA256:") == 2  # the old and the new fingerprint

    report = bootstrap(Selection(hosts=("sbx03",)), quiet(accept_new_host_key=True), settings)
    row = report.results[0]
    assert report.exit_code == EXIT_OK, report.table()
    assert row.state == State.CHANGED
    after = octopus_machines(octopus)
    assert list(after).count("sbx03") == 1 and len(after) == 4
    assert after["sbx03"]["Id"] == before["Id"] == row.octopus_id
    assert after["sbx03"]["Endpoint"]["Thumbprint"] == before["Endpoint"]["Thumbprint"]
    assert after["sbx03"]["HealthStatus"] == "Healthy"
    # the new key is remembered: the next run connects without the flag
    again = bootstrap(Selection(hosts=("sbx03",)), quiet(), settings)
    assert again.results[0].state == State.UNCHANGED


def test_accepting_new_keys_for_a_whole_environment_is_refused(bootstrapped, settings):
    from octoboot.errors import ConfigError

    with pytest.raises(ConfigError, match="--host or --limit"):
        bootstrap(ALL, quiet(accept_new_host_key=True), settings)


def test_changed_roles_in_the_inventory_update_the_record_in_place(bootstrapped, settings, octopus):
    inventory = settings.machines_dir / "sandbox.toml"
    original = inventory.read_text()
    before = octopus_machines(octopus)["sbx01"]
    inventory.write_text(original.replace('name = "sbx01"', 'name = "sbx01"\nroles = ["api"]'))
    try:
        report = bootstrap(Selection(hosts=("sbx01",)), quiet(), settings)
    finally:
        inventory.write_text(original)
    row = report.results[0]
    assert row.state == State.CHANGED, report.table()
    register = next(s for s in row.steps if s.name == "register")
    assert register.status == "changed" and "roles" in register.detail
    after = octopus_machines(octopus)["sbx01"]
    assert after["Id"] == before["Id"] and after["Roles"] == ["api"]
    restored = bootstrap(Selection(hosts=("sbx01",)), quiet(), settings)
    assert octopus_machines(octopus)["sbx01"]["Roles"] == ["web"]
    assert restored.results[0].octopus_id == before["Id"]


def test_dry_run_changes_nothing_anywhere(bootstrapped, sandbox, settings, octopus):
    sandbox.rebuild_host("sbx04")  # so that the dry run has real work to describe
    host = sandbox.host("sbx04")
    folders = [host.disk_path(p) for p in ("/opt/octopus", "/etc/octopus", "/home/Octopus")]
    # the sandbox's inventory keeps known_hosts in the sandbox's folder
    state = [settings.state_dir / "identities", sandbox.root / "known_hosts"]
    before = tree_digest(*folders, state[0]), state[1].read_bytes()
    octopus_before = octopus_machines(octopus)
    offset = request_count(sandbox)
    calls_before = len(host.tentacle_calls())

    report = bootstrap(
        Selection(hosts=("sbx04", "sbx02")), quiet(dry_run=True, accept_new_host_key=True),
        settings,
    )  # fmt: skip
    rows = by_name(report)
    assert rows["sbx04"].state == State.WOULD_CHANGE, report.table()
    assert rows["sbx02"].state == State.UNCHANGED
    plan = {s.name: s for s in rows["sbx04"].steps}
    assert plan["install"].status == "would change"
    assert plan["identity"].status == "would change"
    assert plan["service"].status == "would change"
    log = Path(rows["sbx04"].log).read_text()
    assert "would run:" in log and "import-certificate" in log
    for secret in (sandbox.api_key(), settings.pfx_password().reveal()):
        assert secret not in log and secret not in report.to_json()

    assert (tree_digest(*folders, state[0]), state[1].read_bytes()) == before
    assert octopus_machines(octopus) == octopus_before
    assert writes_since(sandbox, offset) == []
    assert len(host.tentacle_calls()) == calls_before  # not even a probe: it is not installed


def test_deregister_without_and_with_uninstall(bootstrapped, sandbox, settings, octopus):
    sandbox.rebuild_host("sbx04")
    bootstrap(Selection(hosts=("sbx04",)), quiet(accept_new_host_key=True), settings)
    first = octopus_machines(octopus)["sbx04"]

    report = deregister(Selection(hosts=("sbx04",)), quiet(), settings)
    assert report.results[0].state == State.CHANGED
    assert "sbx04" not in octopus_machines(octopus)
    host = sandbox.host("sbx04")
    assert host.disk_path("/etc/octopus/Tentacle").exists()  # the host was not touched

    # back again: a new record, with the same certificate
    report = bootstrap(Selection(hosts=("sbx04",)), quiet(), settings)
    second = octopus_machines(octopus)["sbx04"]
    assert report.exit_code == EXIT_OK
    assert second["Id"] != first["Id"]
    assert second["Endpoint"]["Thumbprint"] == first["Endpoint"]["Thumbprint"]

    report = deregister(Selection(hosts=("sbx04",)), quiet(), settings, uninstall=True)
    steps = {s.name: s.status for s in report.results[0].steps}
    assert steps == {"deregister": "changed", "connect": "ok", "probe": "ok",
                     "uninstall": "changed", "forget": "unchanged"}  # fmt: skip
    assert "sbx04" not in octopus_machines(octopus)
    assert not host.disk_path("/etc/octopus/Tentacle").exists()
    assert not host.disk_path("/etc/systemd/system/Tentacle.service").exists()
    assert (settings.state_dir / "identities" / "sbx04.pfx").exists()


def test_deregister_of_an_unreachable_host_still_removes_the_record(
    bootstrapped, sandbox, settings, octopus
):
    bootstrap(Selection(hosts=("sbx04",)), quiet(), settings)
    assert "sbx04" in octopus_machines(octopus)
    sandbox.stop_host("sbx04")
    try:
        report = deregister(Selection(hosts=("sbx04",)), quiet(), settings, uninstall=True)
    finally:
        sandbox.start_host("sbx04")
    row = report.results[0]
    assert "sbx04" not in octopus_machines(octopus)
    assert row.state == State.UNREACHABLE and row.failed_step == "connect"
    assert row.reason.startswith("removed Machines-")


def test_exec_runs_one_command_everywhere(bootstrapped, settings):
    lines: list[str] = []
    report = exec_command(
        ALL,
        RunOptions(parallel=True, console=lines.append),
        settings,
        command="systemctl is-active Tentacle; hostname; echo note >&2",
    )
    rows = by_name(report)
    assert report.exit_code == EXIT_OK
    shown = "\n".join(lines).splitlines()
    for name in ("sbx01", "sbx02", "sbx03"):
        assert rows[name].state == State.OK
        assert rows[name].facts["stdout"] == f"active\n{name}\n"
        # Each line of output under the machine's name, as parallel-ssh -P and pyinfra show
        # it, before the machine's one summary line; the row says how it ended, not what
        # it printed.
        summary = next(
            i
            for i, line in enumerate(shown)
            if line.startswith(f"[{rows[name].job_id}] {name}: ok (")
        )
        mine = [line for line in shown[:summary] if line.startswith(name)]
        assert [line for line in mine if not line.startswith(f"{name} stderr")] == [
            f"{name}: active",
            f"{name}: {name}",
        ]
        assert f"{name} stderr: note" in mine
        assert shown[summary].endswith(")") and rows[name].reason == ""
    failing = exec_command(ALL, quiet(), settings, command="test $(hostname) != sbx02")
    assert failing.exit_code == EXIT_FAILED
    assert by_name(failing)["sbx02"].state == State.FAILED
    assert by_name(failing)["sbx01"].state == State.OK


def test_a_command_costs_no_thread_of_its_own(bootstrapped, settings, monkeypatch):
    started: list[threading.Thread] = []
    start = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start", lambda t: started.append(t) or start(t))
    report = exec_command(ALL, quiet(), settings, command="echo out; echo err >&2")
    assert report.exit_code == EXIT_OK
    for row in report.results:
        assert (row.facts["stdout"], row.facts["stderr"]) == ("out\n", "err\n")
    # Per machine: its worker, paramiko's transport and its handshake timer; not also
    # Invoke's stdout, stderr and timeout threads for the command.
    assert len(started) <= 3 * len(report.results), [t.name for t in started]


def test_retry_failed_runs_exactly_the_machines_that_failed(bootstrapped, sandbox, settings):
    sandbox.stop_host("sbx02")
    try:
        first = install(ALL, quiet(), settings)
    finally:
        sandbox.start_host("sbx02")
    assert by_name(first)["sbx02"].state == State.UNREACHABLE
    # looking at the fleet does not change what a retry would re-run
    exec_command(ALL, quiet(), settings, command="true")
    retry = install(Selection(env="sandbox", retry_failed=True), quiet(), settings)
    assert [r.machine for r in retry.results] == ["sbx02"]
    assert retry.results[0].state == State.UNCHANGED
    nothing_left = install(Selection(env="sandbox", retry_failed=True), quiet(), settings)
    assert nothing_left.results == []


def test_exec_output_is_masked_like_everything_else(bootstrapped, settings):
    password = settings.pfx_password().reveal()
    report = exec_command(
        Selection(hosts=("sbx01",)), quiet(), settings, command=f"echo {password}"
    )
    assert password not in report.to_json()
    assert report.results[0].facts["stdout"].strip() == "********"


def test_exec_masks_every_secret_octoboot_loaded_on_terminal_log_and_report(
    bootstrapped, sandbox, settings
):
    # The sandbox's own environment takes its key from [octopus] api_key_file; this one
    # from api_key_env. exec uses neither, yet a host (or the command) may print them.
    own_key = f"API-{secrets.token_hex(12).upper()}"
    (settings.machines_dir / "own.toml").write_text(
        'environment = "Sandbox"\nroles = ["web"]\n\n[ssh]\n'
        f'config = "{sandbox.endpoints().ssh_config}"\n'
        f'known_hosts = "{sandbox.root / "known_hosts"}"\n\n'
        '[octopus]\nurl = "http://127.0.0.1:9"\napi_key_env = "OWN_OCTOPUS_KEY"\n\n'
        '[[machines]]\nname = "sbx02"\n'
    )
    keys = [sandbox.api_key(), own_key, settings.pfx_password().reveal()]
    variables = {"OWN_OCTOPUS_KEY": own_key}
    try:
        procs = [
            inv(settings, "exec", "--env", env, "--", "echo", *keys, env=variables)
            for env in ("own", "sandbox")
        ]
    finally:
        (settings.machines_dir / "own.toml").unlink()
    for proc in procs:
        assert proc.returncode == EXIT_OK, proc.stderr
        run_dir = Path(proc.stdout.strip().splitlines()[-1].removeprefix("logs: "))
        texts = [proc.stdout, proc.stderr, *(p.read_text() for p in run_dir.iterdir())]
        assert {p.name for p in run_dir.iterdir()} >= {"report.txt", "report.json"}
        assert "echo ********" in proc.stderr  # the command as the terminal showed it
        for key in keys:
            assert not any(key in text for text in texts)


def test_exec_output_of_any_size_goes_whole_to_the_log_and_bounded_everywhere_else(
    bootstrapped, settings
):
    lines: list[str] = []
    report = exec_command(
        Selection(hosts=("sbx01",)),
        RunOptions(console=lines.append),  # sequential: output is shown as it comes
        settings,
        command="seq 1 400000; echo done >&2",
    )
    row = report.results[0]
    numbers = [str(n) for n in range(1, 400001)]
    size = sum(len(n) + 1 for n in numbers)  # 2.7 MB
    assert row.state == State.OK and row.reason == "", row
    excerpt = row.facts["stdout"]
    assert len(excerpt) < 20_000 and f"{size} bytes" in excerpt
    assert row.facts["stdout_bytes"] == str(size) and row.facts["stderr"] == "done\n"
    assert excerpt.startswith("1\n2\n3\n") and excerpt.endswith("399999\n400000\n")
    for text in (report.to_json(), report.table(), "\n".join(lines)):
        assert len(text) < 50_000
    log = Path(row.log).read_text().splitlines()
    assert [line.split(" stdout| ", 1)[1] for line in log if " stdout| " in line] == numbers


def test_exec_escapes_control_characters_from_hosts(bootstrapped, settings):
    lines: list[str] = []
    report = exec_command(
        Selection(hosts=("sbx01",)),
        RunOptions(console=lines.append),
        settings,
        command=r"printf 'title\033]0;owned\007 \033[2Jcleared\rback\n'",
    )
    row = report.results[0]
    assert row.state == State.OK, row
    for text in (
        "\n".join(lines),
        report.table(),
        (Path(report.run_dir) / "report.txt").read_text(),
    ):
        assert not any(c in text for c in "\x1b\x07\r"), text
    assert r"\x1b[2Jcleared\x0dback" in "\n".join(lines)
    # the log and the JSON keep what the host said (JSON escapes it its own way)
    assert row.facts["stdout"] == "title\x1b]0;owned\x07 \x1b[2Jcleared\rback\n"
    assert "\x1b" in Path(row.log).read_text()


def test_a_command_that_reads_stdin_gets_end_of_input_at_once(bootstrapped, settings):
    report = exec_command(
        Selection(hosts=("sbx01",)), quiet(deadline=20), settings, command="cat; echo read-all"
    )
    row = report.results[0]
    assert row.state == State.OK and row.facts["stdout"] == "read-all\n", row


def test_finished_machines_hold_no_file_descriptors(bootstrapped, settings):
    def open_files() -> int:
        return len(os.listdir("/proc/self/fd"))

    during: list[int] = []

    def console(line: str) -> None:
        if re.match(r"\[\d+\] sbx\d+: ", line):  # a machine's summary: it has finished
            during.append(open_files())

    before = open_files()
    report = exec_command(ALL, RunOptions(console=console), settings, command="true")
    assert report.exit_code == EXIT_OK and len(during) == 4
    # one machine at work at most (a socket and its log), however many have finished
    assert max(during) <= before + 3, during
    assert open_files() <= before


def test_proxyjump_from_the_ssh_config_is_followed_and_host_keys_are_checked(
    bootstrapped, sandbox, settings
):
    # sbx03 drops the controller's packets: only a jump through sbx01 reaches it.
    original = sandbox.endpoints().ssh_config.read_text()
    jumped = settings.machines_dir.parent / "ssh_config.jump"
    jumped.write_text(original.replace("Host sbx03\n", "Host sbx03\n    ProxyJump sbx01\n"))
    known_hosts = settings.machines_dir.parent / "known_hosts.jump"
    (settings.machines_dir / "jumped.toml").write_text(
        'environment = "Sandbox"\nroles = ["web"]\n\n[ssh]\n'
        f'config = "{jumped}"\nknown_hosts = "{known_hosts}"\nconnect_timeout = 3\n\n'
        '[[machines]]\nname = "sbx03"\n'
    )
    sandbox.set_blackhole("sbx03", True)
    try:
        report = exec_command(Selection(env="jumped"), quiet(), settings, command="hostname")
    finally:
        sandbox.set_blackhole("sbx03", False)
        (settings.machines_dir / "jumped.toml").unlink()
    row = report.results[0]
    assert row.state == State.OK, row
    assert row.facts["stdout"] == "sbx03\n"
    remembered = {line.split()[0] for line in known_hosts.read_text().splitlines()}
    assert remembered == {sandbox.host("sbx01").address, sandbox.host("sbx03").address}


def test_install_from_an_archive_pushed_from_the_controller(bootstrapped, sandbox, settings):
    archive = next((sandbox.root / "packages").glob("tentacle-*.tar.gz"))
    (settings.machines_dir / "pushed.toml").write_text(
        'environment = "Sandbox"\nroles = ["web"]\n\n[ssh]\n'
        f'config = "{sandbox.endpoints().ssh_config}"\n'
        f'known_hosts = "{sandbox.root / "known_hosts"}"\n\n'
        f'[tentacle]\nsource = "{archive}"\n\n[[machines]]\nname = "sbx02"\n'
    )
    sandbox.rebuild_host("sbx02")
    try:
        report = install(
            Selection(env="pushed", hosts=("sbx02",)), quiet(accept_new_host_key=True),
            settings,
        )  # fmt: skip
    finally:
        (settings.machines_dir / "pushed.toml").unlink()
    row = report.results[0]
    assert row.state == State.CHANGED, report.table()
    assert "installed Tentacle" in {s.name: s.detail for s in row.steps}["install"]
    host = sandbox.host("sbx02")
    assert host.disk_path("/opt/octopus/tentacle/Tentacle").exists()
    assert [p.name for p in host.disk_path("/tmp").iterdir() if "octoboot" in p.name] == []
    # and the machine is whole again
    again = bootstrap(Selection(hosts=("sbx02",)), quiet(), settings)
    assert again.exit_code == EXIT_OK, again.table()
