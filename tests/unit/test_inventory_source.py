"""Inventory files whose machines come from a command ([source]): real commands run by /bin/sh,
their output checked exactly as [[machines]] tables are, and every way a command can go wrong
one line naming the file and the command."""

import json
import time
from pathlib import Path

import pytest

from octoboot.errors import ConfigError
from octoboot.inventory import load_environment, load_inventory

HEADER = 'environment = "QA"\nroles = ["web"]\n[ssh]\nuser = "deploy"\n'


def source_file(folder: Path, command: str, extra: str = "", name: str = "qa.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(HEADER + f"[source]\ncommand = {json.dumps(command)}\n{extra}")
    return path


def printing(folder: Path, machines: object) -> Path:
    """A file whose command prints `machines` as JSON (from a file, as a script would)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "machines.json").write_text(json.dumps(machines))
    return source_file(folder, "cat machines.json")


def error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_environment(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    return message


def test_machines_from_a_command_are_machines_like_the_files_own(tmp_path):
    path = printing(
        tmp_path,
        [
            {"name": "web01", "address": "10.0.0.5"},
            {"name": "api01", "address": "10.0.0.6", "roles": ["api"], "port": 2222,
             "tentacle_port": 10934, "public_hostname": "api01.example.com"},
        ],
    )  # fmt: skip
    env = load_environment(path)
    web01, api01 = env.machines
    assert (env.key, env.name) == ("qa", "QA")
    assert (web01.name, web01.address, web01.roles, web01.ssh.user) == (
        "web01", "10.0.0.5", ("web",), "deploy",
    )  # fmt: skip
    assert (api01.roles, api01.ssh.port, api01.tentacle.port, api01.public_hostname) == (
        ("api",), 2222, 10934, "api01.example.com",
    )  # fmt: skip
    assert web01.source_file == path


def test_the_command_runs_in_the_files_folder_without_octoboots_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("OCTOBOOT_PFX_PASSWORD", "secret-pfx")
    monkeypatch.setenv("OCTOPUS_API_KEY", "API-SECRET")
    monkeypatch.setenv("CLOUD_TOKEN", "theirs")
    script = (
        'printf \'[{"name": "%s", "address": "10.0.0.5", "roles": ["%s", "%s"]}]\' '
        '"$(basename "$PWD")" "x${OCTOBOOT_PFX_PASSWORD}${OCTOPUS_API_KEY}" "$CLOUD_TOKEN"'
    )
    (machine,) = load_environment(source_file(tmp_path / "inv", script)).machines
    assert machine.name == "inv"
    assert machine.roles == ("x", "theirs")  # octoboot's own secrets were not there


@pytest.mark.parametrize(
    ("machines", "expected"),
    [
        ([{"name": "web01", "address": "web1$(touch pwned)"}],
         "machine 'web01': address: 'web1$(touch pwned)' is not a host name"),
        ([{"name": "web01", "address": "10.0.0.5", "prot": 22}],
         "machine 'web01': unknown key 'prot' (did you mean 'port'?)"),
        ([{"address": "10.0.0.5"}], "machine 1: missing name"),
        ([{"name": "web01", "port": "22"}],
         "machine 'web01': port: expected an integer, got a string"),
        ([{"name": "web01", "roles": None}],
         "machine 'web01': roles: expected a list of strings, got null"),
        ([{"name": "web01"}, {"name": "web01"}], "machine 'web01' is listed twice"),
    ],
)  # fmt: skip
def test_each_machine_is_checked_exactly_as_a_toml_machine(tmp_path, machines, expected):
    message = error(printing(tmp_path, machines))
    assert f"[source] command 'cat machines.json': {expected}" in message
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("echo 'token expired' >&2; exit 3", "failed (exit 3): token expired"),
        ("no-such-command-here", "failed (exit 127): "),
        ("kill -9 $$", "was killed by signal 9"),
        ("echo Error: not logged in", "printed 'Error: not logged in', which is not JSON"),
        ("true", "printed nothing, which is not JSON"),
        ("printf '\\377'", "printed something that is not UTF-8 text"),
        ("echo '{\"machines\": []}'", "printed a JSON object, not a list of machines"),
        ("echo '[\"web01\"]'", "machine 1 is a JSON string, not an object with its keys"),
    ],
)
def test_a_command_that_goes_wrong_is_one_line_naming_the_file_and_the_command(
    tmp_path, command, expected
):
    message = error(source_file(tmp_path, command))
    assert message.startswith(f"{tmp_path / 'qa.toml'}: [source] command {command!r}")
    assert expected in message


def test_a_command_that_hangs_is_stopped_with_everything_it_started(tmp_path):
    pid_file = tmp_path / "child.pid"
    command = f"sleep 60 & echo $! > {pid_file}; wait"
    started = time.monotonic()
    message = error(source_file(tmp_path, command, "timeout = 0.3\n"))
    assert time.monotonic() - started < 10
    assert "did not finish within 0.3 s, and was stopped" in message
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(child):  # killed with its session; the kernel reaps it promptly
        assert time.monotonic() < deadline, f"the command's child {child} outlived it"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_source_and_machines_together_and_source_without_a_command_are_refused(tmp_path):
    both = source_file(tmp_path, "echo []", '[[machines]]\nname = "web01"\n')
    assert error(both).endswith("take the machines from [source] command or list them in "
                                "[[machines]], not both")  # fmt: skip
    (tmp_path / "no.toml").write_text(HEADER + "[source]\ntimeout = 5\n")
    assert error(tmp_path / "no.toml").endswith('[source]: missing command = "..." (required)')
    (tmp_path / "bad.toml").write_text(HEADER + '[source]\ncommand = "echo []"\ntimout = 5\n')
    assert error(tmp_path / "bad.toml").endswith("unknown key 'timout' (did you mean 'timeout'?)")
    (tmp_path / "top.toml").write_text('command = "echo []"\n')
    assert error(tmp_path / "top.toml").endswith(
        "key 'command' does not belong here: put it under [source]"
    )


def test_a_failing_source_stops_the_whole_inventory(tmp_path):
    folder = tmp_path / "machines"
    source_file(folder, "exit 1", name="cloud.toml")
    (folder / "qa.toml").write_text('roles = ["web"]\n[[machines]]\nname = "web01"\n')
    with pytest.raises(ConfigError, match=r"cloud.toml: \[source\] command 'exit 1' failed"):
        load_inventory(folder)


def test_an_empty_list_is_an_empty_environment(tmp_path):
    env = load_environment(source_file(tmp_path, "echo '[]'"))
    assert env.machines == ()
