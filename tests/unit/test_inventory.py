import re
import textwrap
from pathlib import Path

import pytest

from octoboot.errors import ConfigError
from octoboot.inventory import (
    Environment,
    Inventory,
    OctopusOverride,
    Registration,
    SshOptions,
    TentacleOptions,
    load_environment,
    load_inventory,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "inventory.md"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def load(folder: Path, text: str, name: str = "qa.toml") -> Environment:
    return load_environment(write(folder, name, text))


def error(folder: Path, text: str, name: str = "qa.toml") -> str:
    with pytest.raises(ConfigError) as caught:
        load(folder, text, name)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(folder / name) + ": ")
    return message


MINIMAL = """
    roles = ["web"]
    [[machines]]
    name = "web01"
"""


# --- the documented example -------------------------------------------------------------


def doc_example() -> str:
    blocks = re.findall(r"^```toml\n(.*?)^```$", DOC.read_text(), re.DOTALL | re.MULTILINE)
    assert len(blocks) == 1, "docs/inventory.md must hold exactly one ```toml block: the example"
    return blocks[0]


def test_the_documented_example_parses_as_documented(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    folder = tmp_path / "machines"
    env = load(folder, doc_example())

    assert (env.key, env.name, env.file) == ("qa", "QA", folder / "qa.toml")
    assert env.octopus == OctopusOverride(
        url="https://octopus-test.example.com",
        space="Default",
        api_key_env="OCTOPUS_TEST_API_KEY",
        polling_port=10943,
    )
    assert [m.name for m in env.machines] == ["web01", "web02", "api01", "web03", "build01"]
    web01, web02, api01, web03, build01 = env.machines
    assert web01.address == "web01" and web01.roles == ("web",)
    assert web01.public_hostname is None
    assert web01.ssh == SshOptions(
        user="deploy",
        port=22,
        key=tmp_path / "home" / ".ssh" / "id_ed25519",
        config=tmp_path / "home" / ".ssh" / "config",
        known_hosts=tmp_path / ".octoboot" / "known_hosts",
        sudo=True,
        connect_timeout=10.0,
        deadline=900.0,
    )
    assert web01.tentacle == TentacleOptions(
        instance="Tentacle",
        port=10933,
        version="8.3.2977",
        source="https://example.com/tentacle-{version}-net8.0-linux-x64.tar.gz",
        app_dir="/home/Octopus/Applications",
    )
    assert web01.tentacle.resolved_source() == (
        "https://example.com/tentacle-8.3.2977-net8.0-linux-x64.tar.gz"
    )
    assert not web01.tentacle.source_is_local
    assert (web02.address, web02.public_hostname) == ("10.0.0.6", "web02.qa.example.com")
    assert api01.roles == ("web", "api")
    assert (api01.ssh.user, api01.ssh.sudo, api01.ssh.port, api01.ssh.deadline) == (
        "root",
        False,
        2222,
        1800.0,
    )
    assert api01.ssh.key == web01.ssh.key
    assert api01.tentacle.port == 10934 and web02.tentacle.port == 10933
    assert [m.communication for m in env.machines] == ["listening"] * 3 + ["polling", "listening"]
    assert (web03.kind, web03.roles) == ("target", ("web",))
    assert (build01.kind, build01.roles, build01.worker_pools) == (
        "worker", (), ("Linux workers",)
    )  # fmt: skip
    assert web01.registration == Registration(machine_policy="Linux cattle")
    assert api01.registration == Registration(machine_policy="Linux cattle", proxy="DMZ proxy")
    assert web02.registration == Registration(
        machine_policy="Linux cattle",
        tenants=("Acme Corp", "globex"),
        tenant_tags=("Region/EU",),
        tenanted="TenantedOrUntenanted",
    )
    for machine in env.machines:
        assert (machine.env_key, machine.environment) == ("qa", "QA")
        assert machine.octopus == env.octopus
        assert machine.source_file == folder / "qa.toml"


# --- defaults and values ----------------------------------------------------------------


def test_defaults(tmp_path):
    env = load(tmp_path, MINIMAL, name="staging.toml")
    (machine,) = env.machines
    assert (env.key, env.name, env.octopus) == ("staging", "staging", None)
    assert machine.environment == "staging"
    assert machine.address == "web01"
    assert machine.ssh == SshOptions(None, None, None, None, None, False, 10.0, 900.0)
    assert machine.tentacle == TentacleOptions(
        "Tentacle", 10933, None, None, "/home/Octopus/Applications"
    )
    assert machine.tentacle.resolved_source() is None
    assert not machine.tentacle.source_is_local


def test_relative_paths_are_relative_to_the_file_and_tilde_is_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    env = load(
        tmp_path / "inv",
        """
        roles = ["web"]
        [octopus]
        api_key_file = "../secrets/test.key"
        [ssh]
        key = "keys/id"
        config = "~/cfg"
        known_hosts = "/abs/known_hosts"
        [[machines]]
        name = "web01"
        key = "other/id"
        """,
    )
    assert env.octopus == OctopusOverride(api_key_file=tmp_path / "secrets" / "test.key")
    ssh = env.machines[0].ssh
    assert ssh.key == tmp_path / "inv" / "other" / "id"
    assert ssh.config == tmp_path / "home" / "cfg"
    assert ssh.known_hosts == Path("/abs/known_hosts")


def test_local_sources_become_absolute_paths(tmp_path):
    def source(value: str) -> TentacleOptions:
        env = load(tmp_path, MINIMAL + f'[tentacle]\nversion = "1.2.3"\nsource = "{value}"\n')
        return env.machines[0].tentacle

    local = source("pkg/t-{version}.tar.gz")
    assert local.source == str(tmp_path / "pkg" / "t-{version}.tar.gz")
    assert local.resolved_source() == str(tmp_path / "pkg" / "t-1.2.3.tar.gz")
    assert local.source_is_local
    assert source("file:///srv/t-{version}.tgz").resolved_source() == "/srv/t-1.2.3.tgz"
    assert source("http://10.0.0.1:8000/t.tgz").source == "http://10.0.0.1:8000/t.tgz"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('source = "ftp://example.com/t.tgz"', "[tentacle]: source: must be an http(s) URL"),
        ('source = "file://host/t.tgz"', "[tentacle]: source: must be an http(s) URL"),
        ('source = "https:///t.tgz"', "[tentacle]: source: must be an http(s) URL"),
        ('source = "https://x/t-{version}.tgz"', "[tentacle] source contains {version}: set"),
        ('version = "latest"', "[tentacle]: version: must be a version like 8.3.2977"),
        ('version = "8.3; rm -rf /"', "[tentacle]: version: must be a version"),
        ('app_dir = "Applications"', "[tentacle]: app_dir: must be an absolute path on the host"),
        ('instance = ""', "[tentacle]: instance: must not be empty"),
    ],
)
def test_bad_tentacle_values(tmp_path, table, message):
    assert message in error(tmp_path, MINIMAL + f"[tentacle]\n{table}\n")


def test_versions_that_look_like_versions_are_accepted(tmp_path):
    for version in ("8.3.2977", "6", "8.3.2977-pr1234", "8.3.2977+build.5"):
        env = load(tmp_path, MINIMAL + f'[tentacle]\nversion = "{version}"\n')
        assert env.machines[0].tentacle.version == version


def test_roles_override_replaces_defaults_and_duplicates_collapse(tmp_path):
    env = load(
        tmp_path,
        """
        roles = ["web", "web", "Web Server"]
        [[machines]]
        name = "a"
        [[machines]]
        name = "b"
        roles = ["db"]
        """,
    )
    assert [m.roles for m in env.machines] == [("web", "Web Server"), ("db",)]


def test_spaces_are_fine_in_environment_and_role_names(tmp_path):
    env = load(
        tmp_path, 'environment = "QA Europe"\nroles = ["web server"]\n[[machines]]\nname="a"'
    )
    assert (env.name, env.machines[0].roles) == ("QA Europe", ("web server",))


def test_a_file_without_machines_is_an_empty_environment(tmp_path):
    assert load(tmp_path, 'environment = "QA"').machines == ()


# --- errors -----------------------------------------------------------------------------


def test_malformed_toml_names_file_line_and_column(tmp_path):
    message = error(tmp_path, 'roles = ["web"]\n[[machines]]\nname = web01\n')
    assert "invalid TOML" in message and "line 3" in message and "column" in message


def test_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "qa.toml"
    path.write_bytes(b'environment = "\xff"\n')
    with pytest.raises(ConfigError, match=re.escape(f"{path}: ")):
        load_environment(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('rolse = ["web"]', "unknown key 'rolse' (did you mean 'roles'?)"),
        ("[ssh]\nprot = 22", "[ssh]: unknown key 'prot' (did you mean 'port'?)"),
        (
            '[tentacle]\nverison = "1"',
            "[tentacle]: unknown key 'verison' (did you mean 'version'?)",
        ),
        ('[octopus]\napi_key = "x"', "[octopus]: unknown key 'api_key' (did you mean"),
        ('[[machine]]\nname = "a"', "unknown key 'machine' (did you mean 'machines'?)"),
        ("[ssh]\nzzz = 1", "[ssh]: unknown key 'zzz' (valid keys: user, port, key,"),
        (
            'user = "root"',
            "key 'user' does not belong here: put it under [ssh] or in a [[machines]]",
        ),
        (
            '[tentacle]\nuser = "root"',
            "[tentacle]: key 'user' does not belong here: put it under [ssh]",
        ),
        (
            '[ssh]\nname = "a"',
            "[ssh]: key 'name' does not belong here: put it in a [[machines]] entry",
        ),
    ],
)
def test_unknown_keys_outside_machines(tmp_path, text, message):
    assert message in error(tmp_path, text)


def test_unknown_key_in_a_machine_names_machine_and_suggests(tmp_path):
    message = error(tmp_path, MINIMAL + 'adress = "10.0.0.5"\n')
    assert "machine 'web01': unknown key 'adress' (did you mean 'address'?)" in message


def test_tentacle_key_in_a_machine_says_where_it_belongs(tmp_path):
    message = error(tmp_path, MINIMAL + 'version = "1.0"\n')
    assert "machine 'web01': key 'version' does not belong here: put it under [tentacle]" in message


def test_top_level_key_below_machines_explains_toml_tables(tmp_path):
    message = error(tmp_path, MINIMAL + 'environment = "QA"\n')
    assert "machine 'web01': key 'environment' does not belong here" in message
    assert "above the first [table]" in message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('roles = "web"', "roles: expected a list of strings, got a string"),
        ("roles = [1]", "roles: expected a string, got an integer"),
        ("environment = 5", "environment: expected a string, got an integer"),
        ('ssh = "x"', "ssh: expected a table, got a string"),
        ('[ssh]\nport = "22"', "[ssh]: port: expected an integer, got a string"),
        ("[ssh]\nport = true", "[ssh]: port: expected an integer, got true/false"),
        ("[ssh]\nport = 22.0", "[ssh]: port: expected an integer, got a number"),
        ('[ssh]\nsudo = "yes"', "[ssh]: sudo: expected true or false, got a string"),
        ("[ssh]\nsudo = 1", "[ssh]: sudo: expected true or false, got an integer"),
        ("[ssh]\nconnect_timeout = true", "[ssh]: connect_timeout: expected a number of seconds"),
        ("[ssh]\nkey = 1979-05-27", "[ssh]: key: expected a string, got a date/time"),
        ("[tentacle]\nversion = 8.3", "[tentacle]: version: expected a string, got a number"),
        ("machines = 1", "machines: expected an array of tables ([[machines]]), got an integer"),
        ("machines = [1]", "machines: expected a [[machines]] table in every entry"),
    ],
)
def test_wrong_types_name_key_and_expected_type(tmp_path, text, message):
    assert message in error(tmp_path, text)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('port = "22"', "machine 'web01': port: expected an integer, got a string"),
        ("roles = 'web'", "machine 'web01': roles: expected a list of strings"),
        ("address = 5", "machine 'web01': address: expected a string, got an integer"),
        ('address = "10.0.0.5 extra"', "machine 'web01': address: '10.0.0.5 extra' is not a host"),
        ('public_hostname = "a b"', "machine 'web01': public_hostname: 'a b' is not a host name"),
        ("tentacle_port = 0", "machine 'web01': tentacle_port: must be a port number"),
    ],
)
def test_wrong_machine_values_name_the_machine(tmp_path, line, message):
    assert message in error(tmp_path, MINIMAL + line + "\n")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[ssh]\nport = 0", "[ssh]: port: must be a port number from 1 to 65535, got 0"),
        ("[ssh]\nport = 65536", "[ssh]: port: must be a port number from 1 to 65535, got 65536"),
        ("[tentacle]\nport = -1", "[tentacle]: port: must be a port number from 1 to 65535"),
        ("[ssh]\nconnect_timeout = -1", "[ssh]: connect_timeout: must be a positive number"),
        ("[ssh]\nconnect_timeout = 0", "[ssh]: connect_timeout: must be a positive number"),
        ("[ssh]\ndeadline = -0.5", "[ssh]: deadline: must be a positive number of seconds"),
        ("[ssh]\ndeadline = inf", "[ssh]: deadline: must be a positive number of seconds"),
        ("[ssh]\ndeadline = nan", "[ssh]: deadline: must be a positive number of seconds"),
    ],
)
def test_ranges(tmp_path, text, message):
    assert message in error(tmp_path, text)


def test_fractional_timeouts_are_fine(tmp_path):
    env = load(tmp_path, MINIMAL + "[ssh]\nconnect_timeout = 2.5\ndeadline = 60\n")
    assert (env.machines[0].ssh.connect_timeout, env.machines[0].ssh.deadline) == (2.5, 60.0)


def test_duplicate_machine_names(tmp_path):
    message = error(tmp_path, MINIMAL + '[[machines]]\nname = "web01"\n')
    assert "machine 'web01' is listed twice" in message


def test_machine_names_differing_only_in_case(tmp_path):
    message = error(tmp_path, MINIMAL + '[[machines]]\nname = "WEB01"\n')
    assert "machines 'web01' and 'WEB01' differ only in case" in message


def test_missing_name_says_which_entry(tmp_path):
    message = error(tmp_path, MINIMAL + '[[machines]]\naddress = "10.0.0.9"\n')
    assert "[[machines]] entry 2: missing name" in message


def test_misspelt_name_is_an_unknown_key_with_a_suggestion(tmp_path):
    message = error(tmp_path, 'roles = ["web"]\n[[machines]]\nnmae = "web01"\n')
    assert "[[machines]] entry 1: unknown key 'nmae' (did you mean 'name'?)" in message


def test_no_roles_after_defaults(tmp_path):
    message = error(tmp_path, '[[machines]]\nname = "web01"\n')
    assert "machine 'web01': no roles: set roles = [...]" in message
    message = error(tmp_path, MINIMAL + "roles = []\n")
    assert "machine 'web01': no roles" in message


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("web 01", "is not a safe machine name: use 1 to 63 letters, digits"),
        ("-web", "is not a safe machine name"),
        (".hidden", "is not a safe machine name"),
        ("web/01", "is not a safe machine name"),
        ("web;reboot", "is not a safe machine name"),
        ("a" * 64, "is not a safe machine name"),
        ("wéb", "is not a safe machine name"),
        ("web01\\n", "must not contain line breaks"),
    ],
)
def test_unsafe_machine_names(tmp_path, name, problem):
    message = error(tmp_path, f'roles = ["web"]\n[[machines]]\nname = "{name}"\n')
    assert ": name: " in message and problem in message


def test_longest_safe_machine_name(tmp_path):
    name = "a" + "b-._" * 15 + "zz"
    assert len(name) == 63
    text = f'roles = ["web"]\n[[machines]]\nname = "{name}"\naddress = "10.0.0.5"'
    assert load(tmp_path, text).machines[0].name == name


@pytest.mark.parametrize(
    "text",
    [
        'environment = "QA\\nEU"',
        'roles = ["web\\u0000"]',
        'roles = ["a\\tb"]',
        '[ssh]\nuser = "root\\r"',
        '[octopus]\nspace = "x\\u007f"',
    ],
)
def test_control_characters_are_refused_in_every_string(tmp_path, text):
    assert "must not contain line breaks or other control characters" in error(tmp_path, text)


def test_empty_strings_are_refused(tmp_path):
    assert "environment: must not be empty" in error(tmp_path, 'environment = " "')


def test_api_key_env_must_be_a_variable_name_and_is_never_echoed(tmp_path):
    key = "API-ABCDEF0123456789"
    message = error(tmp_path, f'[octopus]\napi_key_env = "{key}"')
    assert "[octopus]: api_key_env: must be the NAME of an environment variable" in message
    assert key not in message


def test_api_key_env_and_file_together(tmp_path):
    message = error(tmp_path, '[octopus]\napi_key_env = "K"\napi_key_file = "k"')
    assert "[octopus]: set api_key_env or api_key_file, not both" in message


def test_unsafe_file_name(tmp_path):
    message = error(tmp_path, MINIMAL, name="q a.toml")
    assert "the file name is the environment key used by --env" in message


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'nope.toml'}: cannot read")):
        load_environment(tmp_path / "nope.toml")


# --- the whole inventory and selection --------------------------------------------------


def machines_file(folder: Path, name: str, *machines: str) -> None:
    write(
        folder,
        name,
        'roles = ["web"]\n' + "".join(f'[[machines]]\nname = "{m}"\n' for m in machines),
    )


def fleet(folder: Path) -> Inventory:
    machines_file(folder, "qa.toml", "web02", "web01", "db01", "shared")
    machines_file(folder, "prod.toml", "web01", "api01", "shared")
    write(folder, "empty.toml", 'environment = "Empty"\n')
    return load_inventory(folder)


def names(machines) -> list[tuple[str, str]]:
    return [(m.env_key, m.name) for m in machines]


def select_error(inventory: Inventory, **selection) -> str:
    with pytest.raises(ConfigError) as caught:
        inventory.select(**selection)
    return str(caught.value)


def test_load_inventory_keys_environments_by_file_stem(tmp_path):
    fleet(tmp_path)
    write(tmp_path, ".#qa.toml", "not toml at all [")  # an editor's lock file
    write(tmp_path, "notes.txt", "ignored")
    inventory = load_inventory(tmp_path)
    assert list(inventory.environments) == ["empty", "prod", "qa"]
    assert inventory.environments["empty"].name == "Empty"
    assert inventory.directory == tmp_path


def test_load_inventory_reports_the_bad_file(tmp_path):
    fleet(tmp_path)
    write(tmp_path, "prod.toml", "[ssh]\nport = 0\n")
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'prod.toml'}: [ssh]: port")):
        load_inventory(tmp_path)


def test_missing_or_empty_machines_dir(tmp_path):
    with pytest.raises(ConfigError, match=f"no machines directory {tmp_path / 'machines'}"):
        load_inventory(tmp_path / "machines")
    (tmp_path / "machines").mkdir()
    with pytest.raises(ConfigError, match=f"{tmp_path / 'machines'} has no \\*.toml files"):
        load_inventory(tmp_path / "machines")


def test_select_an_environment_in_file_order(tmp_path):
    qa = fleet(tmp_path).select(env="qa")
    assert names(qa) == [("qa", "web02"), ("qa", "web01"), ("qa", "db01"), ("qa", "shared")]


def test_select_needs_env_or_host(tmp_path):
    message = select_error(fleet(tmp_path), limits=["web*"])
    assert message == "choose --env or --host (environments: empty, prod, qa)"


def test_unknown_env_lists_the_known_ones(tmp_path):
    message = select_error(fleet(tmp_path), env="QA")
    assert message == (
        f"no environment 'QA': there is no {tmp_path / 'QA.toml'}; did you mean 'qa'? "
        "(known: empty, prod, qa)"
    )


def test_empty_environment_is_an_error_when_selected(tmp_path):
    message = select_error(fleet(tmp_path), env="empty")
    assert message == (
        f"{tmp_path / 'empty.toml'} lists no machines: add [[machines]] entries (or have its "
        "[source] command print some)"
    )


def test_hosts_are_found_in_any_environment_and_kept_in_inventory_order(tmp_path):
    inventory = fleet(tmp_path)
    assert names(inventory.select(hosts=["api01"])) == [("prod", "api01")]
    assert names(inventory.select(hosts=["db01", "web02", "db01"])) == [
        ("qa", "web02"),
        ("qa", "db01"),
    ]


def test_host_in_two_environments_needs_env(tmp_path):
    message = select_error(fleet(tmp_path), hosts=["web01"])
    assert str(tmp_path / "prod.toml") in message and str(tmp_path / "qa.toml") in message
    assert "add --env prod or qa" in message


def test_env_and_host_narrow_to_that_file(tmp_path):
    inventory = fleet(tmp_path)
    assert names(inventory.select(env="qa", hosts=["web01"])) == [("qa", "web01")]
    assert names(inventory.select(env="prod", hosts=["web01"])) == [("prod", "web01")]


def test_host_is_matched_exactly_with_suggestions(tmp_path):
    inventory = fleet(tmp_path)
    message = select_error(inventory, hosts=["WEB02"])
    assert (
        message == f"no machine 'WEB02' in {tmp_path / '*.toml'}; did you mean 'web02' or 'web01'?"
    )
    assert "did you mean 'db01'?" in select_error(inventory, hosts=["db1"])
    assert "did you mean" not in select_error(inventory, hosts=["zzzzzz"])


def test_host_in_another_environment_says_where(tmp_path):
    message = select_error(fleet(tmp_path), env="prod", hosts=["db01"])
    assert (
        message
        == f"no machine 'db01' in {tmp_path / 'prod.toml'} (it is in {tmp_path / 'qa.toml'})"
    )
    message = select_error(fleet(tmp_path), env="prod", hosts=["api1"])
    assert message == f"no machine 'api1' in {tmp_path / 'prod.toml'}; did you mean 'api01'?"


def test_limits_are_globs_over_names(tmp_path):
    inventory = fleet(tmp_path)
    assert names(inventory.select(env="qa", limits=["web*"])) == [("qa", "web02"), ("qa", "web01")]
    assert names(inventory.select(env="qa", limits=["db?1", "web01"])) == [
        ("qa", "web01"),
        ("qa", "db01"),
    ]
    assert names(inventory.select(hosts=["api01"], limits=["api*"])) == [("prod", "api01")]


def test_a_limit_matching_nothing_is_an_error(tmp_path):
    inventory = fleet(tmp_path)
    message = select_error(inventory, env="qa", limits=["web*", "WEB*"])
    assert message == (
        "limit pattern 'WEB*' matches none of the selected machines (web02, web01, db01, shared)"
    )
    assert "'db*' matches none" in select_error(inventory, hosts=["api01"], limits=["db*"])


# --- polling and workers --------------------------------------------------------------------


def test_communication_and_kind_default_to_a_listening_target(tmp_path):
    (machine,) = load(tmp_path, MINIMAL).machines
    assert (machine.kind, machine.communication, machine.worker_pools) == (
        "target", "listening", ()
    )  # fmt: skip
    assert not machine.is_worker and not machine.is_polling


def test_communication_at_file_level_and_per_machine(tmp_path):
    env = load(
        tmp_path,
        """
        roles = ["web"]
        communication = "polling"
        [octopus]
        polling_port = 10944
        server_comms_address = "https://polling.example.com:443"
        [[machines]]
        name = "web01"
        [[machines]]
        name = "web02"
        communication = "listening"
        """,
    )
    assert [m.communication for m in env.machines] == ["polling", "listening"]
    assert env.octopus == OctopusOverride(
        polling_port=10944, server_comms_address="https://polling.example.com:443"
    )


def test_a_worker_file_takes_pools_and_no_environment_or_roles(tmp_path):
    env = load(
        tmp_path,
        """
        kind = "worker"
        worker_pools = ["Linux workers"]
        [[machines]]
        name = "build01"
        [[machines]]
        name = "build02"
        worker_pools = ["WorkerPools-2", "docker"]
        """,
        name="workers.toml",
    )
    build01, build02 = env.machines
    assert build01.is_worker and build01.roles == () and build01.worker_pools == ("Linux workers",)
    assert build02.worker_pools == ("WorkerPools-2", "docker")


def test_targets_and_workers_in_one_file_keep_their_own_defaults(tmp_path):
    env = load(
        tmp_path,
        """
        roles = ["web"]
        worker_pools = ["Linux workers"]
        [[machines]]
        name = "web01"
        [[machines]]
        name = "build01"
        kind = "worker"
        """,
    )
    web01, build01 = env.machines
    assert (web01.kind, web01.roles, web01.worker_pools) == ("target", ("web",), ())
    assert (build01.kind, build01.roles, build01.worker_pools) == (
        "worker", (), ("Linux workers",)
    )  # fmt: skip


@pytest.mark.parametrize(
    "text, message",
    [
        (
            'kind = "worker"\nroles = ["web"]\nworker_pools = ["p"]\n',
            'a worker file (kind = "worker") takes no roles',
        ),
        (
            'kind = "worker"\nenvironment = "QA"\nworker_pools = ["p"]\n',
            'a worker file (kind = "worker") takes no environment',
        ),
        (
            'worker_pools = ["p"]\n[[machines]]\nname = "b1"\nkind = "worker"\nroles = ["web"]\n',
            "machine 'b1': a worker (kind = \"worker\") takes no roles",
        ),
        (
            'kind = "worker"\n[[machines]]\nname = "b1"\n',
            "machine 'b1': a worker needs worker pools: set worker_pools = [...]",
        ),
        (
            'roles = ["web"]\n[[machines]]\nname = "w1"\nworker_pools = ["p"]\n',
            "machine 'w1': worker_pools is for workers",
        ),
        ('kind = "agent"\n', "kind: must be 'target' or 'worker', got 'agent'"),
        (
            'communication = "active"\n',
            "communication: must be 'listening' or 'polling', got 'active'",
        ),
        (
            '[octopus]\nserver_comms_address = "octopus:10943"\n',
            "[octopus]: server_comms_address: must be the polling endpoint as https://host:port",
        ),
        ("[octopus]\npolling_port = 0\n", "[octopus]: polling_port: must be a port number"),
        (
            'worker_pools = ["p"]\n[[machines]]\nname = "b1"\nkind = "worker"\ntenants = ["A"]\n',
            "machine 'b1': a worker takes no tenants, tenant_tags or tenanted",
        ),
    ],
)
def test_bad_polling_and_worker_settings_are_one_line_each(tmp_path, text, message):
    assert message in error(tmp_path, text)
