import errno
import os

import paramiko
import pytest

from octoboot import files
from octoboot.errors import ConfigError
from octoboot.files import StateWriteError
from octoboot.ssh import KnownHosts


def new_key() -> paramiko.PKey:
    return paramiko.ECDSAKey.generate()


def line(name: str, key: paramiko.PKey) -> str:
    return f"{name} {key.get_name()} {key.get_base64()}"


def test_a_damaged_line_is_one_line_naming_the_file_and_the_line(tmp_path):
    path = tmp_path / "known_hosts"
    good = line("10.0.0.1", new_key())
    path.write_text(f"{good}\n{good[:-7]}\n")
    with pytest.raises(ConfigError) as err:
        KnownHosts(path)
    message = str(err.value)
    assert message.startswith(f"{path} line 2 is damaged (its key cannot be read)")
    assert "\n" not in message


def test_lines_paramiko_cannot_use_but_openssh_can_are_left_alone(tmp_path):
    path = tmp_path / "known_hosts"
    path.write_text(
        "# a comment\n\n"
        "@cert-authority *.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE\n"
        "10.0.0.2 sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29t\n"
    )
    KnownHosts(path)


def test_a_missing_host_name_or_key_is_damage(tmp_path):
    path = tmp_path / "known_hosts"
    path.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsab\n")
    with pytest.raises(ConfigError, match=r"line 1 is damaged \(it needs host names"):
        KnownHosts(path)


def test_keys_seen_for_the_first_time_are_counted_and_replacements_are_not(tmp_path):
    known = KnownHosts(tmp_path / "known_hosts")
    known.remember("10.0.0.1", new_key())
    known.remember("[10.0.0.2]:2222", new_key())
    known.remember("10.0.0.1", new_key())  # a rebuilt machine, accepted on purpose
    assert known.learned == 2


def test_runs_sharing_known_hosts_keep_each_others_keys(tmp_path):
    path = tmp_path / "known_hosts"
    first_key, second_key, rebuilt = new_key(), new_key(), new_key()
    path.write_text(line("10.0.0.1", first_key) + "\n")
    one, other = KnownHosts(path), KnownHosts(path)  # two runs, each read the file once
    other.remember("10.0.0.2", second_key)
    one.remember("10.0.0.1", rebuilt)  # replacing must not drop what `other` wrote
    assert path.read_text().splitlines() == [
        line("10.0.0.2", second_key),
        line("10.0.0.1", rebuilt),
    ]
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_a_known_hosts_that_cannot_be_written_stays_whole(tmp_path, monkeypatch):
    path = tmp_path / "known_hosts"
    path.write_text(line("10.0.0.1", new_key()) + "\n")
    before = path.read_text()

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "write", full)
    with pytest.raises(StateWriteError, match="known_hosts: No space left on device"):
        KnownHosts(path).remember("10.0.0.2", new_key())
    assert path.read_text() == before and os.listdir(tmp_path) == ["known_hosts"]
