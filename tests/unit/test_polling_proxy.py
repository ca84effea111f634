"""The command that sets a polling Tentacle's own proxy: pure, quoted, never a password."""

import shlex

from octoboot.drift import polling_proxy_drift
from octoboot.inventory import PollingProxy
from octoboot.tentacle import (
    EXECUTABLE,
    PollingProxySettings,
    Probe,
    parse_probe,
    polling_proxy_arguments,
    polling_proxy_command,
    probe_command,
)


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


# --- what the probe reads of the host, and the decision --------------------------------------

SET_BY_THE_TENTACLE = """\
  <set key="Octopus.Server.Proxy.ProxyHost">Proxy.Corp</set>
  <set key="Octopus.Server.Proxy.ProxyPort">3128</set>
  <set key="Octopus.Server.Proxy.ProxyUsername">o&apos;brien &amp; co</set>
  <set key="Octopus.Server.Proxy.UseDefaultProxy">false</set>
"""


def probed(section: str) -> Probe:
    return parse_probe(f"@@octoboot:installed\nyes\n@@octoboot:polling-proxy\n{section}")


def test_the_probe_reads_the_proxy_settings_the_tentacle_keeps():
    assert probed(SET_BY_THE_TENTACLE).polling_proxy == PollingProxySettings(
        "Proxy.Corp", 3128, "o'brien & co", use_default=False
    )
    # A fresh instance has written none of them: the Tentacle's defaults.
    assert probed("").polling_proxy == PollingProxySettings(None, 80, "", use_default=True)
    cleared = '  <set key="Octopus.Server.Proxy.UseDefaultProxy">false</set>\n'
    cleared += '  <set key="Octopus.Server.Proxy.ProxyUsername" />\n'
    assert probed(cleared).polling_proxy == PollingProxySettings(use_default=False)


def test_the_probe_never_asks_for_the_password():
    command = probe_command("Tentacle")
    assert "Octopus\\.Server\\.Proxy\\.(ProxyHost|ProxyPort|ProxyUsername|UseDefaultProxy)" in (
        command
    )
    assert "assword" not in command
    # The instance's own file, as the machine-wide index names it.
    assert "/etc/octopus/Tentacle/Instances/tentacle.config" in command


def settings(host: str | None, port: int = 80, username: str = "", default: bool = False):
    return Probe(installed=True, polling_proxy=PollingProxySettings(host, port, username, default))


def test_the_decision_compares_host_port_and_user():
    wanted = PollingProxy("proxy.corp", 3128, "svc")
    assert polling_proxy_drift(settings("PROXY.corp", 3128, "svc"), wanted) is None
    for differs in (
        settings("other.corp", 3128, "svc"),
        settings("proxy.corp", 8080, "svc"),
        settings("proxy.corp", 3128, ""),
        settings(None, 3128, "svc"),
        settings(None, default=True),
    ):
        found = polling_proxy_drift(differs, wanted)
        assert found is not None and found.what == "polling proxy", differs
    assert str(polling_proxy_drift(settings(None), wanted)) == (
        "polling proxy (host none, inventory proxy.corp:3128 as svc)"
    )
    # No user name wanted: one left on the host is drift (the command clears it).
    assert polling_proxy_drift(settings("proxy.corp", 80, "old"), PollingProxy("proxy.corp"))


def test_none_wanted_is_no_proxy_host_of_its_own():
    assert polling_proxy_drift(settings(None), None) is None
    # A fresh instance (the system's default proxy) is left alone; a cleared one keeps the
    # port and user it had, which no longer matter.
    assert polling_proxy_drift(settings(None, default=True), None) is None
    assert polling_proxy_drift(settings(None, 3128, "svc"), None) is None
    assert str(polling_proxy_drift(settings("proxy.corp", 3128), None)) == (
        "polling proxy (host proxy.corp:3128, inventory none)"
    )
