"""`server-comms`: how the Tentacle talks to a server it trusts, after ServerCommsCommand.

    Tentacle server-comms --instance I --thumbprint T --style TentacleActive --host H --port P

TentacleActive (polling): the trusted entry for T gets the address https://H:P/ and, if it
has none yet, a subscription id: the one another polling entry of T has, else a new random
`poll://<20 lower-case characters>/`. TentaclePassive (listening): T's entry without an
address becomes listening. Options, checks, messages and the order of work follow the real
command; the entry is updated by thumbprint and address as `AddOrUpdateTrustedOctopusServer`
does.
"""

from __future__ import annotations

import secrets
import string
from urllib.parse import urlsplit

from .command import Command, Invocation
from .dotnet import parse_int
from .failures import ControlledFailure
from .options import Option
from .settings import LISTENING

DEFAULT_SERVER_PORT = 10943
POLLING = 2  # CommunicationStyle.TentacleActive
NO_STYLE = 0  # CommunicationStyle.None
# Octopus.Client's CommunicationStyle names, which Enum.TryParse accepts (and numbers).
_STYLES = {
    name.lower(): number
    for number, name in enumerate(
        ["None", "TentaclePassive", "TentacleActive", "Ssh", "OfflineDrop", "AzureWebApp",
         "Ftp", "AzureCloudService", "AzureServiceFabricCluster", "Kubernetes"]
    )
}  # fmt: skip
# [derived] RandomStringGenerator's alphabet is not in the sources we read; the id is lower-cased.
_SUBSCRIPTION_ALPHABET = string.ascii_lowercase + string.digits


def _style(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    if value.lstrip("-").isdigit():
        return int(value)
    return _STYLES.get(value.lower())


def _active_address(inv: Invocation) -> str:
    """GetActiveAddress: https://host:port (as .NET's Uri prints it), or a wss:// address."""
    p = inv.parsed
    host, web_socket = p.value("host"), p.value("web-socket")
    has_host, has_web_socket = bool(host and host.strip()), bool(web_socket and web_socket.strip())
    if not has_host and not has_web_socket:
        raise ControlledFailure(
            "Please provide either the server hostname or websocket address, e.g. --host=OCTOPUS"
        )
    if has_host and has_web_socket:
        raise ControlledFailure("The hostname and websocket options cannot be used together")
    if has_host:
        port = parse_int(p.value("port") or str(DEFAULT_SERVER_PORT))
        shown = "" if port == 443 else f":{port}"
        return f"https://{str(host).strip().lower()}{shown}/"
    address = urlsplit(str(web_socket).strip())
    if address.scheme.lower() not in ("https", "wss"):
        raise ControlledFailure("The websocket address must start with wss://")
    return address._replace(scheme="wss").geturl()


def _same(left: str | None, right: str | None) -> bool:
    return (left or "").lower() == (right or "").lower()


def _server_comms(inv: Invocation) -> None:
    p, settings = inv.parsed, inv.current.settings()
    trusted = settings.trusted_servers
    distinct = list(dict.fromkeys(s["Thumbprint"] for s in trusted))
    if not distinct:
        raise ControlledFailure(
            "Before server communications can be modified, trust must be established with the "
            "configure command"
        )
    thumbprint = p.value("thumbprint")
    if not (thumbprint and thumbprint.strip()):
        if len(distinct) != 1:
            raise ControlledFailure(
                "More than one server is trusted; please provide the thumbprint of the server "
                "to configure, e.g. --thumbprint=..."
            )
        thumbprint = distinct[0]
    style = _style(p.value("style"))
    if style is None:
        raise ControlledFailure(
            "Please specify a valid communications style, e.g. --style=TentaclePassive"
        )
    # Exact, as the real command's `s.Thumbprint == serverThumbprint`.
    servers = [dict(s) for s in trusted if s["Thumbprint"] == thumbprint]
    if not servers:
        raise ControlledFailure("No trusted server was found with the supplied thumbprint")
    if style == POLLING:
        address = _active_address(inv)
        server = (
            next((s for s in servers if _same(s.get("Address"), address)), None)
            or next((s for s in servers if s.get("CommunicationStyle") == NO_STYLE), None)
            or {"Thumbprint": thumbprint, "Squid": None, "SubscriptionId": None}
        )
        server.update(Address=address, CommunicationStyle=POLLING)
        if server.get("SubscriptionId") is None:
            existing = next(
                (
                    s["SubscriptionId"]
                    for s in servers
                    if s.get("CommunicationStyle") == POLLING and s.get("SubscriptionId")
                ),
                None,
            )
            server["SubscriptionId"] = existing or _new_subscription()
    else:
        listening = next((s for s in servers if s.get("Address") is None), None)
        server = listening or {
            "Thumbprint": thumbprint, "Address": None, "Squid": None, "SubscriptionId": None,
        }  # fmt: skip
        server["CommunicationStyle"] = LISTENING
    settings.add_or_update_server(server)
    inv.vote_for_restart()
    inv.log.info("Updated server communications configuration")


def _new_subscription() -> str:
    return "poll://" + "".join(secrets.choice(_SUBSCRIPTION_ALPHABET) for _ in range(20)) + "/"


COMMANDS = (
    Command(
        "server-comms",
        "Configure how the Tentacle communicates with an Octopus Server",
        _server_comms,
        (
            Option(
                "thumbprint=",
                "The thumbprint of the Octopus Server to configure communication with; if only "
                "one Octopus Server is configured, this may be omitted",
            ),
            Option(
                "style=",
                "The communication style to use with the Octopus Server - either TentacleActive "
                "or TentaclePassive",
            ),
            Option("host=", "When using active communication, the host name of the Octopus Server"),
            Option(
                "port=",
                "When using active communication, the communications port of the Octopus "
                f"Server; the default is {DEFAULT_SERVER_PORT}",
            ),
            Option(
                "web-socket=",
                "When using active communication over websockets, the address of the Octopus "
                "Server, eg 'wss://example.com/OctopusComms'. Refer to "
                "http://g.octopushq.com/WebSocketComms",
            ),
        ),
    ),
)
