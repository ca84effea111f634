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


def test_a_lookup_looks_only_at_the_blocks_that_can_match(monkeypatch):
    # paramiko went through every block for every host, asking for the local user name at
    # each it did not match: N² for N hosts.
    blocks = "".join(f"Host sbx{i}\n    HostName 10.77.1.{i}\n\n" for i in range(50))
    config = SSHConfig.from_text(
        blocks + "Match localuser nobody\n    Port 2200\n\nHost sbx*\n    User root\n"
    )
    asked, looked_at = [], []
    real, matches = getpass.getuser, SSHConfig._pattern_matches
    monkeypatch.setattr(getpass, "getuser", lambda: asked.append(1) or real())
    monkeypatch.setattr(
        SSHConfig, "_pattern_matches", lambda *a: looked_at.append(1) or matches(*a)
    )
    for i in range(50):
        found = config.lookup(f"sbx{i}")
        assert (found["hostname"], found["user"]) == (f"10.77.1.{i}", "root")
    # Per lookup and pass: the global block, the host's own, the Match block (its hosts, and
    # its localuser) and the wildcard one, not the other 49; paramiko's own: 52 blocks.
    assert len(looked_at) == 50 * 2 * 5
    assert len(asked) <= 3 * 50
