"""The command that sets a polling Tentacle's own proxy: pure, quoted, never a password."""

import shlex

from octoboot.tentacle import EXECUTABLE, polling_proxy_arguments, polling_proxy_command


def test_a_proxy_and_none():
    assert polling_proxy_arguments("Tentacle", "proxy.corp", 3128, "svc") == [
        "polling-proxy", "--instance", "Tentacle", "--proxyEnable", "true",
        "--proxyHost", "proxy.corp", "--proxyPort", "3128", "--proxyUsername", "svc",
    ]  # fmt: skip
    # no user name: cleared, so a user name set before does not linger
    assert polling_proxy_arguments("Tentacle", "proxy.corp")[-4:] == [
        "--proxyPort", "80", "--proxyUsername", "",
    ]  # fmt: skip
    assert polling_proxy_arguments("Tentacle", None) == [
        "polling-proxy", "--instance", "Tentacle", "--proxyEnable", "false",
    ]  # fmt: skip


def test_the_command_line_is_quoted_marks_a_restart_and_takes_no_password():
    command = polling_proxy_command("Web Tentacle", "proxy.corp", 3128, "o'brien")
    first, _, restart = command.partition(" && ")
    assert shlex.split(first) == [
        EXECUTABLE,
        *polling_proxy_arguments("Web Tentacle", "proxy.corp", 3128, "o'brien"),
    ]
    assert ".octoboot-restart-pending" in restart
    assert "assword" not in command
