"""octoboot's ssh_config lookup (ssh.SSHConfig) answers as paramiko's does, without its
cost per Host block."""

import getpass

import paramiko

from octoboot.ssh import SSHConfig

CONFIG = """\
Host web1 web2
    HostName 10.0.0.1
    Port 2201

Host db?
    User postgres

Host *.example.com !bad.example.com
    ProxyJump jump.example.com

Host [ab]x
    Port 2202

Match host 10.0.0.1 user deploy
    IdentityFile ~/.ssh/deploy

Match originalhost web2
    ConnectTimeout 7

Host literal-one
    HostName 10.0.0.9

Host *
    User root
    IdentitiesOnly yes
"""
HOSTS = ["web1", "web2", "web3", "db1", "db12", "ax", "cx", "a.example.com", "bad.example.com",
         "literal-one", "literal-on", "literal-one.x", "10.0.0.1"]  # fmt: skip


def test_every_lookup_answers_as_paramikos():
    ours, theirs = SSHConfig.from_text(CONFIG), paramiko.SSHConfig.from_text(CONFIG)
    for host in HOSTS:
        assert ours.lookup(host) == theirs.lookup(host), host


def test_the_local_user_is_asked_only_for_match_blocks(monkeypatch):
    # paramiko asked for it at every block a host did not match: N² for N hosts.
    blocks = "".join(f"Host sbx{i}\n    HostName 10.77.1.{i}\n\n" for i in range(50))
    config = SSHConfig.from_text(blocks + "Match localuser nobody\n    Port 2200\n")
    asked = []
    real = getpass.getuser
    monkeypatch.setattr(getpass, "getuser", lambda: asked.append(1) or real())
    for i in range(50):
        assert config.lookup(f"sbx{i}")["hostname"] == f"10.77.1.{i}"
    # A few times per lookup (the Match block in each of its two passes, the expansion of
    # %u), not once per block: paramiko's own asks 50 times a pass.
    assert len(asked) <= 3 * 50
