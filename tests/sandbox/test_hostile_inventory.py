"""A hostile inventory against a real ssh_config and a real Octopus: paramiko runs ssh_config
`Match exec` lines through a shell on the controller with the host pasted in, so an address
like `web1$(touch${IFS}FILE)` must be refused before any connection is built, under every
command, read-only ones included."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.sandbox.project import inv, project_settings

PASSWORD = "hostile-inventory-test-password"


@pytest.fixture(scope="module")
def sandbox(sandbox_factory):
    return sandbox_factory(1, install_seconds=0)


def hostile_project(root: Path, sandbox, address: str) -> Path:
    """A project whose ssh_config has a `Match exec` line, and one machine at `address`."""
    (root / "machines").mkdir(parents=True)
    (root / ".env").write_text(f"OCTOBOOT_PFX_PASSWORD={PASSWORD}\n")
    (root / "ssh_config").write_text('Match exec "test %h != bastion"\n    User root\n')
    ends = sandbox.endpoints()
    (root / "machines" / "hostile.toml").write_text(
        'environment = "Sandbox"\nroles = ["web"]\n\n'
        f'[octopus]\nurl = "{ends.octopus_url}"\napi_key_file = "{ends.api_key_file}"\n\n'
        f'[ssh]\nconfig = "{root / "ssh_config"}"\nknown_hosts = "{root / "known_hosts"}"\n'
        "connect_timeout = 3\ndeadline = 20\n\n"
        f"[[machines]]\nname = \"web1\"\naddress = '{address}'\n"
    )
    return root


COMMANDS = [
    ("status", "--env", "hostile"),
    ("bootstrap", "--env", "hostile", "--dry-run"),
    ("deregister", "--env", "hostile", "--dry-run"),
    ("exec", "--env", "hostile", "--", "true"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:1] + c[3:4]).strip(" -"))
def test_an_address_that_would_run_a_command_is_refused_before_any_connection(
    sandbox, tmp_path, command
):
    pwned = tmp_path / "pwned"
    address = f"web1$(touch${{IFS}}{pwned})"  # no space: whitespace was always refused
    root = hostile_project(tmp_path / "project", sandbox, address)
    # The trap is armed: paramiko's own lookup of this host runs the touch on the controller.
    lookup = "import paramiko, sys; paramiko.SSHConfig.from_path(sys.argv[1]).lookup(sys.argv[2])"
    subprocess.run(
        [sys.executable, "-c", lookup, str(root / "ssh_config"), address],
        stdin=subprocess.DEVNULL, capture_output=True, check=True,
    )  # fmt: skip
    assert pwned.exists()
    pwned.unlink()

    done = inv(project_settings(root), *command)

    assert not pwned.exists()
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(
        f"octoboot: {root / 'machines' / 'hostile.toml'}: machine 'web1': address: "
        f"'{address}' is not a host name, an IPv4 or an IPv6 address"
    )
    assert done.stdout == ""
    assert not (root / ".octoboot" / "runs").exists()  # no run began


def test_user_and_port_in_the_address_are_refused_with_their_keys(sandbox, tmp_path):
    address = sandbox.host("sbx01").address
    root = hostile_project(tmp_path / "project", sandbox, f"root@{address}:22")
    done = inv(project_settings(root), "status", "--env", "hostile")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().endswith(
        f"address: 'root@{address}:22' holds a user and a port: give only the host, "
        f"'{address}', and the user and the port with their own keys (user = \"root\", port = 22)"
    )
