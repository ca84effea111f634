"""The host a machine is reached at: a host name, an IPv4 or a bare IPv6 address, nothing else.

paramiko pastes the host into ssh_config `Match exec` commands run by a shell on the
controller, so anything else could run commands there; a user or port belongs to its own key.
The CLI test with a real ssh_config is tests/sandbox/test_hostile_inventory.py."""

from pathlib import Path

import pytest

from octoboot.errors import ConfigError
from octoboot.exec import Exec, ExecOptions
from octoboot.inventory import host_problem, load_environment, load_inventory
from octoboot.run import Run, RunOptions, Selection
from octoboot.settings import load_settings

ACCEPTED = [
    "web01",
    "WEB01",
    "web-01.qa.example.com",
    "a",
    "1a",
    "x" * 63,
    ".".join(["a" * 63] * 3 + ["b" * 61]),  # 253 characters
    "10.1.2.3",
    "255.255.255.255",
    "::1",
    "fe80::1",
    "2001:db8::22",
    "::ffff:10.1.2.3",
]

HOSTILE = [
    "web1$(touch /tmp/pwned)",
    "web1$(touch${IFS}/tmp/pwned)",
    "web1;reboot",
    "web1`id`",
    "web1|nc",
    "web1&&id",
    "web1>x",
    "'web1'",
    '"web1"',
    "web1\\",
    "%h",
    "web%d",
    "-oProxyCommand=id",
    "web 01",
    "web\t01",
    "*",
    "web?",
    "web_01",  # not RFC 1123, though some resolvers take it
    "-web",
    "web-",
    "web..qa",
    ".web",
    "web.",
    "x" * 64,
    ".".join(["a" * 63] * 4),  # 255 characters
    "wéb",
    "999.1.1.1",
    "010.1.2.3",
    "1234",  # a resolver reads it as 0.0.4.210
    "fe80::1%eth0",
    "fe80::1%$(id)",
    "[::1]",
    "1:2:3",
    "x:y",
]


@pytest.mark.parametrize("host", ACCEPTED)
def test_host_names_and_addresses_are_accepted(host):
    assert host_problem(host) is None


@pytest.mark.parametrize("host", HOSTILE)
def test_anything_else_is_refused_with_the_value_named(host):
    problem = host_problem(host)
    assert problem is not None and repr(host) in problem and "\n" not in problem


@pytest.mark.parametrize(
    ("host", "problem"),
    [
        (
            "root@10.1.2.3:22",
            "'root@10.1.2.3:22' holds a user and a port: give only the host, '10.1.2.3', and the "
            'user and the port with their own keys (user = "root", port = 22)',
        ),
        (
            "deploy@web01",
            "'deploy@web01' holds a user: give only the host, 'web01', and the user with its own "
            'key (user = "deploy")',
        ),
        (
            "web01:2222",
            "'web01:2222' holds a port: give only the host, 'web01', and the port with its own "
            "key (port = 2222)",
        ),
        (
            "[2001:db8::22]:22",
            "'[2001:db8::22]:22' holds a port: give only the host, '2001:db8::22', and the port "
            "with its own key (port = 22)",
        ),
        ("[::1]", "'[::1]': write an IPv6 address without brackets, e.g. '::1'"),
    ],
)
def test_a_user_a_port_or_brackets_say_where_they_go(host, problem):
    assert host_problem(host) == problem


def test_the_port_key_named_is_the_callers(tmp_path):
    assert "(tentacle_port = 10933)" in host_problem("web01:10933", "tentacle_port")


# --- in an inventory file -----------------------------------------------------------------


def inventory_error(folder: Path, machine: str) -> str:
    path = folder / "qa.toml"
    path.write_text(f'roles = ["web"]\n[[machines]]\n{machine}\n')
    with pytest.raises(ConfigError) as caught:
        load_environment(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    return message


def test_a_hostile_address_is_one_line_naming_file_machine_and_key(tmp_path):
    message = inventory_error(tmp_path, 'name = "web01"\naddress = "web1$(touch /tmp/pwned)"')
    assert "machine 'web01': address: 'web1$(touch /tmp/pwned)' is not a host name" in message


def test_user_and_port_in_the_address_are_refused_with_their_keys(tmp_path):
    message = inventory_error(tmp_path, 'name = "web01"\naddress = "root@10.1.2.3:22"')
    assert message.endswith(
        "machine 'web01': address: 'root@10.1.2.3:22' holds a user and a port: give only the "
        "host, '10.1.2.3', and the user and the port with their own keys "
        '(user = "root", port = 22)'
    )


def test_a_name_that_is_not_a_host_needs_an_address(tmp_path):
    message = inventory_error(tmp_path, 'name = "web_01"')
    assert "machine 'web_01': name: with no address, the name is the host to connect to" in message
    assert 'set address = "..."' in message
    path = tmp_path / "qa.toml"
    path.write_text('roles = ["web"]\n[[machines]]\nname = "web_01"\naddress = "web-01"\n')
    assert load_environment(path).machines[0].address == "web-01"


def test_public_hostname_follows_the_same_rule(tmp_path):
    message = inventory_error(tmp_path, 'name = "web01"\npublic_hostname = "web01:10933"')
    assert "public_hostname: 'web01:10933' holds a port" in message
    assert "(tentacle_port = 10933)" in message


# --- did you mean: a renamed machine keeps its address ------------------------------------


def renamed_fleet(folder: Path):
    (folder / "qa.toml").write_text(
        'roles = ["web"]\n'
        '[[machines]]\nname = "sbx01-new"\naddress = "sbx01"\n'
        '[[machines]]\nname = "sbx02"\n[[machines]]\nname = "sbx03"\n[[machines]]\nname = "sbx04"\n'
        '[[machines]]\nname = "db01"\naddress = "10.0.0.9"\n'
    )
    return load_inventory(folder)


@pytest.mark.parametrize("env", [None, "qa"])
def test_an_old_name_suggests_the_machine_reached_at_it(tmp_path, env):
    with pytest.raises(ConfigError) as caught:
        renamed_fleet(tmp_path).select(env=env, hosts=["sbx01"])
    # By spelling alone, sbx02, sbx03 and sbx04 are closer than sbx01-new.
    assert str(caught.value).endswith("; did you mean 'sbx01-new' (address 'sbx01')?")


def test_an_address_asked_for_as_a_name_suggests_its_machine(tmp_path):
    with pytest.raises(ConfigError, match=r"did you mean 'db01' \(address '10.0.0.9'\)\?$"):
        renamed_fleet(tmp_path).select(hosts=["10.0.0.9"])


# --- --accept-new-host-key is for named machines only -------------------------------------


def project_settings(folder: Path):
    machines = folder / "machines"
    machines.mkdir()
    (machines / "qa.toml").write_text(
        'roles = ["web"]\n'
        + "".join(f'[[machines]]\nname = "{name}"\n' for name in ("web01", "web02", "db01"))
    )
    return load_settings(
        {"OCTOBOOT_MACHINES_DIR": str(machines), "OCTOBOOT_STATE_DIR": str(folder / "state")},
        None,
    )


def accepting_run(settings, **selection) -> Run:
    options = RunOptions(accept_new_host_key=True)
    selected = Selection(env="qa", **selection)
    return Run("exec", Exec, selected, options, settings, ExecOptions("true"))


@pytest.mark.parametrize("limits", [(), ("*",), ("*", "web01"), ("web*", "db*"), ("[wd]*",)])
def test_accepting_new_keys_for_a_whole_environment_is_refused(tmp_path, limits):
    with pytest.raises(ConfigError) as caught:
        accepting_run(project_settings(tmp_path), limits=limits)
    message = str(caught.value)
    assert message.startswith("--accept-new-host-key accepts a changed key only for machines")
    assert "not for a whole environment" in message


@pytest.mark.parametrize(
    ("selection", "chosen"),
    [
        ({"limits": ("web*",)}, ["web01", "web02"]),
        ({"hosts": ("web01", "web02", "db01")}, ["web01", "web02", "db01"]),
        ({"hosts": ("db01",), "limits": ("*",)}, ["db01"]),
    ],
)
def test_accepting_new_keys_for_named_machines_is_fine(tmp_path, selection, chosen):
    run = accepting_run(project_settings(tmp_path), **selection)
    assert [m.name for m in run.machines] == chosen
