"""The Tentacle stand-in's `polling-proxy`, run as a host runs it, with the arguments octoboot
builds: the Tentacle's own proxy settings, set, changed and turned off; never a password."""

from __future__ import annotations

from octoboot.tentacle import polling_proxy_arguments
from tests.sandbox import test_tentacle_standin_local as local
from tests.sandbox.test_tentacle_standin_local import Host, create_default_instance

# An extracted Tentacle of its own, as the stand-in's local tests make one.
archive, make_host, host = local.archive, local.make_host, local.host

PROXY_KEYS = tuple(
    f"Octopus.Server.Proxy.{key}"
    for key in ("ProxyHost", "ProxyPort", "ProxyUsername", "UseDefaultProxy")
)


def proxy_settings(host: Host) -> dict[str, str]:
    return {k.rsplit(".", 1)[1]: v for k, v in host.settings().items() if k in PROXY_KEYS}


def test_octoboots_arguments_set_change_and_clear_the_proxy(host: Host) -> None:
    create_default_instance(host)
    said = host.ok(*polling_proxy_arguments("Tentacle", "proxy.corp", 3128, "svc-octopus"))
    assert proxy_settings(host) == {
        "ProxyHost": "proxy.corp", "ProxyPort": "3128", "ProxyUsername": "svc-octopus",
        "UseDefaultProxy": "false",
    }  # fmt: skip
    assert "Proxy username set to: svc-octopus" in said
    assert "Proxy port set to: 3128" in said and "Using custom proxy at: proxy.corp" in said
    host.ok(*polling_proxy_arguments("Tentacle", "10.0.0.9", 8080))
    assert proxy_settings(host) == {
        "ProxyHost": "10.0.0.9", "ProxyPort": "8080", "ProxyUsername": "",
        "UseDefaultProxy": "false",
    }  # fmt: skip
    said = host.ok(*polling_proxy_arguments("Tentacle", None))
    assert "Proxy use is disabled" in said
    settings = proxy_settings(host)
    assert "ProxyHost" not in settings and settings["UseDefaultProxy"] == "false"
    assert not any("assword" in a for call in host.recorded_argv() for a in call["argv"])


def test_the_real_options_and_their_failures(host: Host) -> None:
    create_default_instance(host)
    said = host.ok("polling-proxy", "--proxyEnable=true", "--proxyHost=http://squid:3128/")
    assert "Using custom proxy at: squid" in said
    said = host.ok("polling-proxy", "--proxyEnable", "true")
    assert "Using Internet Explorer Proxy" in said
    assert proxy_settings(host)["UseDefaultProxy"] == "true"
    said = host.ok("polling-proxy", "--proxyPassword", "by-hand", "--proxyEnable", "false")
    assert "Proxy password set to: *******" in said and "by-hand" not in said
    unparsable = host.run("polling-proxy", "--proxyEnable", "maybe")
    assert unparsable.returncode == 100  # bool.Parse's FormatException is not controlled
    assert "was not recognized as a valid Boolean" in unparsable.stderr
