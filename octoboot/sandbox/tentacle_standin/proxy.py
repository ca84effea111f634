"""`polling-proxy`: the proxy a polling Tentacle reaches its Octopus Server through.

As the real `PollingProxyConfigurationCommand` (a `ProxyConfigurationCommand`, octopus-facts
§6.4): the options are applied in the order given, then `--proxyEnable` decides: true with a
host sets that host (`UseDefaultProxy` false), true without one means "the system's default
proxy", false clears the host. The password is a setting like the others here; the real
Tentacle encrypts it with the machine key, as it does the certificate (a known difference of
the stand-in, docs/design.md).
"""

from __future__ import annotations

from .command import Command, Invocation
from .dotnet import parse_bool, parse_int
from .options import Option

USE_DEFAULT_PROXY = "Octopus.Server.Proxy.UseDefaultProxy"
PROXY_USERNAME = "Octopus.Server.Proxy.ProxyUsername"
PROXY_PASSWORD = "Octopus.Server.Proxy.ProxyPassword"
PROXY_HOST = "Octopus.Server.Proxy.ProxyHost"
PROXY_PORT = "Octopus.Server.Proxy.ProxyPort"


def _uri_host(value: str) -> str:
    """The host part of what `new UriBuilder(value).Host` reads: a bare name, or a URL's."""
    rest = value.strip().split("://", 1)[-1]
    return rest.split("/", 1)[0].rsplit("@", 1)[-1].split(":", 1)[0]


def _polling_proxy(inv: Invocation) -> None:
    log, settings = inv.log, inv.current.settings()
    use_a_proxy, host = False, None
    for option, given in inv.parsed.pairs:
        name, value = option.names[0].lower(), given or ""
        if name == "proxyenable":
            use_a_proxy = parse_bool(value)
        elif name == "proxyusername":
            settings.set(PROXY_USERNAME, value)
            log.info(
                "Proxy username cleared" if not value.strip() else f"Proxy username set to: {value}"
            )
        elif name == "proxypassword":
            settings.set(PROXY_PASSWORD, value)
            log.info(
                "Proxy password cleared" if not value.strip() else "Proxy password set to: *******"
            )
        elif name == "proxyhost":
            if value.strip():
                host = _uri_host(value)
        elif name == "proxyport":
            port = 80 if not value.strip() else parse_int(value)
            settings.set(PROXY_PORT, str(port))
            if host is not None:
                log.info(f"Proxy port set to: {port}")
    if use_a_proxy:
        settings.set(PROXY_HOST, host)
        settings.set(USE_DEFAULT_PROXY, str(host is None).lower())
        log.info(f"Using custom proxy at: {host}" if host else "Using Internet Explorer Proxy")
    else:
        settings.set(PROXY_HOST, None)
        settings.set(USE_DEFAULT_PROXY, "false")
        log.info("Proxy use is disabled")


COMMANDS = (
    Command(
        "polling-proxy",
        "Configure the HTTP proxy used by polling Tentacles to reach the Octopus Server",
        _polling_proxy,
        (
            Option("proxyEnable=", "Whether to use a proxy"),
            Option("proxyUsername=", "Username to use when authenticating with the proxy"),
            Option("proxyPassword=", "Password to use when authenticating with the proxy"),
            Option(
                "proxyHost=",
                "The proxy host to use. Leave empty to use the default Internet Explorer proxy",
            ),
            Option(
                "proxyPort=",
                "The proxy port to use in conjunction with the Host set with proxyHost",
            ),
        ),
    ),
)
