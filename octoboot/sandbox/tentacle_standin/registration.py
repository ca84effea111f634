"""`register-with` and `deregister-from`: the Tentacle's side of the REST conversation.

After RegisterMachineCommandBase, RegisterMachineCommand, DeregisterMachineCommand,
SpaceRepositoryFactory and Octopus.Client's RegisterMachineOperation; the requests are those of
octopus-facts §2.2. Only listening Tentacles (TentaclePassive) are supported: the stand-in has
no polling connection to offer, so TentacleActive is refused as a controlled failure.
"""

from __future__ import annotations

import socket
import urllib.parse

from .command import Command, Invocation
from .dotnet import parse_int
from .failures import ControlledFailure
from .octopus_client import OctopusClient, OctopusValidationException, expand
from .options import Option, Parsed
from .settings import LISTENING
from .version import version_info

LISTENING_STYLE = "TentaclePassive"
POLLING_STYLE = "TentacleActive"
_PARTICIPATION = ("Untenanted", "TenantedOrUntenanted", "Tenanted")
_CERTIFICATE_GLOBAL = "/api/configuration/certificates/certificate-global"

API_OPTIONS = (
    Option("server=", "The Octopus Server - e.g., 'http://octopus'"),
    Option("apiKey=", "Your API key; you can get this from the Octopus web portal"),
    Option("bearerToken=", "A Bearer Token which has access to your Octopus instance"),
    Option("u|username=|user=", "If not using API keys, your username"),
    Option("p|password=", "If not using API keys, your password"),
)


def machine_name() -> str:
    """.NET's Environment.MachineName on Linux: the host name up to the first dot."""
    return socket.gethostname().split(".")[0]


def validate_api_options(parsed: Parsed) -> None:
    """ApiEndpointOptions.Validate: a server and exactly one kind of credential."""
    server, api_key = parsed.value("server"), parsed.value("apiKey")
    bearer, username, password = (parsed.value(n) for n in ("bearerToken", "username", "password"))
    if sum(map(bool, (api_key, bearer, username or password))) > 1:
        raise ControlledFailure(
            "Please specify a Bearer Token, API Key or username and password - not multiple."
        )
    if username and not password:
        raise ControlledFailure("Please specify a password for the specified user account")
    if password and not username:
        raise ControlledFailure("Please specify a username for the specified password")
    if not server:
        raise ControlledFailure(
            "Please specify an Octopus Server, e.g., --server=http://your-octopus-server"
        )
    if not (username or api_key or bearer):
        raise ControlledFailure(
            "Please specify an Octopus API key, a Bearer Token or a username and password. You can "
            "get an API key from the Octopus web portal. E.g., --apiKey=ABC1234"
        )


def _server_uri(parsed: Parsed) -> str:
    """The server URL as .NET's Uri prints it (an empty path becomes `/`)."""
    parts = urllib.parse.urlsplit(str(parsed.value("server")))
    return urllib.parse.urlunsplit(parts._replace(path=parts.path or "/"))


def _client(parsed: Parsed) -> OctopusClient:
    if parsed.value("username"):
        raise ControlledFailure(
            "Signing in with a username and password is not supported by the Tentacle stand-in; "
            "use --apiKey or --bearerToken."
        )
    api_key, bearer = parsed.value("apiKey"), parsed.value("bearerToken")
    headers = {"X-Octopus-ApiKey": api_key} if api_key else {"Authorization": f"Bearer {bearer}"}
    headers["User-Agent"] = f"OctopusTentacle/{version_info()['NuGetVersion']} (stand-in)"
    return OctopusClient(str(parsed.value("server")), headers)


def _space_base(client: OctopusClient, root: dict, space_name: str | None) -> str:
    """The route prefix of the chosen space: `--space` by name, else the user's default space."""
    if "Spaces" not in root.get("Links", {}):
        if space_name:
            raise ControlledFailure(
                f'A space with name "{space_name}" was requested, but this version of Octopus '
                "Server does not support spaces. Please upgrade Octopus Server to a version which "
                'supports spaces, or remove the "space" parameter.'
            )
        return "/api"
    user = client.get(root["Links"]["CurrentUser"])
    spaces = client.get(user["Links"]["Spaces"])
    if space_name:
        chosen = [s for s in spaces if s["Name"].strip().lower() == space_name.lower()]
        if not chosen:
            raise ControlledFailure(
                f'A space with name "{space_name}" could not be found. Ensure you have spelled '
                "the space name correctly and that the user has access to this space."
            )
    else:
        chosen = [s for s in spaces if s.get("IsDefault")]
        if not chosen:
            raise ControlledFailure(
                'No "space" was specified, and the default space is disabled or inaccessible to '
                'this user. Please select a space using the "space" parameter.'
            )
    return f"/api/{chosen[0]['Id']}"


def _server_thumbprint(client: OctopusClient, root: dict) -> str:
    link = root.get("Links", {}).get("CertificateConfiguration")
    path = expand(link, id="certificate-global") if link else _CERTIFICATE_GLOBAL
    return client.get(path)["Thumbprint"]


def _check_server_version(root: dict) -> None:
    version = root.get("Version") or ""
    if not version:
        raise ControlledFailure("Unable to determine the Octopus Server version.")
    server_major = parse_int(version.split(".")[0])
    tentacle_major = parse_int(version_info()["MajorMinorPatch"].split(".")[0])
    if 0 < server_major < 3 and tentacle_major != 0:
        raise ControlledFailure(
            f"You cannot register a {tentacle_major}.* Octopus Tentacle with a "
            f"{server_major}.* Octopus Server."
        )


def _find_by_name(client: OctopusClient, base: str, name: str) -> dict | None:
    """Machines.FindByName: the server filters by name, the client insists on an exact match."""
    page: dict | None = client.get(f"{base}/machines", name=name)
    while page:
        for machine in page.get("Items", []):
            if machine["Name"].strip().lower() == name.strip().lower():
                return machine
        next_page = page.get("Links", {}).get("Page.Next")
        page = client.get(next_page) if next_page and page.get("Items") else None
    return None


def _find_all(client: OctopusClient, base: str, collection: str) -> list[dict]:
    return client.get(f"{base}/{collection}/all")


def _environment_ids(client: OctopusClient, base: str, wanted: list[str]) -> list[str]:
    """Environments by name, then slug, then Id (each case-insensitive)."""
    known = _find_all(client, base, "environments")
    found, missing = [], []
    for item in wanted:
        match = next(
            (
                env
                for field in ("Name", "Slug", "Id")
                for env in known
                if str(env.get(field, "")).lower() == item.lower()
            ),
            None,
        )
        if match is None:
            missing.append(item)
        elif match["Id"] not in found:
            found.append(match["Id"])
    if len(missing) == 1:
        raise ControlledFailure(
            f"Could not find the environment with name, slug or Id {missing[0]} on the Octopus "
            "Server. Ensure the environment exists and you have permission to access it."
        )
    if missing:
        raise ControlledFailure(
            f"Could not find the environments with names, slugs or Ids: {', '.join(missing)} on "
            "the Octopus Server. Ensure the environments exist and you have permission to access "
            "them."
        )
    return found


def _machine_policy_id(client: OctopusClient, base: str, policy: str) -> str:
    for candidate in _find_all(client, base, "machinepolicies"):
        if candidate["Name"].strip().lower() == policy.strip().lower():
            return candidate["Id"]
    raise ControlledFailure(
        f"Could not find the machine policy named {policy} on the Octopus Server. Ensure the "
        "machine policy exists and you have permission to access it."
    )


def _participation(value: str | None) -> str:
    if value is None:
        return _PARTICIPATION[0]
    for name in _PARTICIPATION:
        if name.lower() == value.strip().lower():
            return name
    raise ControlledFailure(
        f"The value '{value}' is not valid. Valid values are Untenanted, TenantedOrUntenanted or "
        "Tenanted."
    )


def _check_register_arguments(p: Parsed) -> str:
    """What the real command refuses before it talks to the server; returns the comms style."""
    environments, roles = p.values("environment"), p.values("role")
    if not environments or not environments[0].strip():
        raise ControlledFailure(
            "Please specify an environment name, slug or Id, e.g., --environment=Development"
        )
    if not roles or not roles[0].strip():
        raise ControlledFailure("Please specify a role name, e.g., --role=web-server")
    style = (p.value("comms-style") or LISTENING_STYLE).strip()
    styles = {s.lower(): s for s in (LISTENING_STYLE, POLLING_STYLE)}
    if style.lower() not in styles:
        raise ControlledFailure(
            "Please specify a valid communications style, e.g. --comms-style=TentaclePassive"
        )
    for port in ("server-comms-port", "tentacle-comms-port"):
        if p.value(port) is not None:
            parse_int(str(p.value(port)))
    return styles[style.lower()]


def _register(inv: Invocation) -> None:
    p, log = inv.parsed, inv.log
    participation = _participation(p.value("tenanted-deployment-participation"))
    style = _check_register_arguments(p)
    settings = inv.current.settings()
    if settings.thumbprint is None:
        raise ControlledFailure(
            "No certificate has been generated for this Tentacle. Please run the new-certificate "
            "command first."
        )
    if style == POLLING_STYLE:
        raise ControlledFailure(
            "Polling Tentacles (--comms-style=TentacleActive) are not supported by the Tentacle "
            "stand-in: register a listening Tentacle (TentaclePassive)."
        )
    for unsupported in ("proxy", "tenant", "tenanttag"):
        if p.values(unsupported):
            raise ControlledFailure(f"--{unsupported} is not supported by the Tentacle stand-in.")
    log.info(f"Registering the tentacle with the server at {_server_uri(p)}")
    client = _client(p)
    root = client.root()
    base = _space_base(client, root, p.value("space"))
    _check_server_version(root)
    server_thumbprint = _server_thumbprint(client, root)
    name = (p.value("name") or "").strip() or machine_name()
    existing = _find_by_name(client, base, name)
    if existing and not p.flag("force"):
        raise ControlledFailure(
            f"A machine named '{name}' already exists in the environment. Use the 'force' "
            "parameter if you intended to update the existing machine."
        )
    machine = existing or {"IsDisabled": False}
    if p.value("policy"):
        machine["MachinePolicyId"] = _machine_policy_id(client, base, str(p.value("policy")))
    host = (p.value("publicHostName") or "").strip() or machine_name()
    port = parse_int(p.value("tentacle-comms-port") or str(settings.port))
    machine.update(
        Name=name,
        Endpoint={
            "CommunicationStyle": LISTENING_STYLE,
            "Uri": f"https://{host.lower()}:{port}/",
            "Thumbprint": settings.thumbprint,
            "ProxyId": None,
        },
        EnvironmentIds=_environment_ids(client, base, p.values("environment")),
        Roles=p.values("role"),
        TenantIds=[],
        TenantTags=[],
        TenantedDeploymentParticipation=participation,
    )
    try:
        if existing:
            client.request("PUT", existing["Links"]["Self"], machine)
        else:
            client.request("POST", f"{base}/machines", machine)
    except OctopusValidationException as exc:
        raise ControlledFailure(str(exc)) from None
    settings.add_or_update_trust(server_thumbprint, LISTENING)
    inv.vote_for_restart()
    log.info("Machine registered successfully")


def _deregister(inv: Invocation) -> None:
    p, log = inv.parsed, inv.log
    client = _client(p)
    root = client.root()
    base = _space_base(client, root, p.value("space"))
    own = inv.current.settings().thumbprint
    if own is None:
        raise ControlledFailure(
            "This Tentacle does not have a thumbprint. The Tentacle must have a thumbprint in "
            "order to deregister it."
        )
    machines = client.get(f"{base}/machines/all", thumbprint=own)
    if not machines:
        raise ControlledFailure("No machine was found matching this Tentacle's thumbprint.")
    if len(machines) > 1 and not p.flag("multiple"):
        raise ControlledFailure(
            "The Tentacle matches more than one machine on the server. To deregister all of "
            "these machines specify the --multiple flag."
        )
    for machine in machines:
        log.info(f"Deleting machine '{machine['Name']}' from the Octopus Server...")
        client.request("DELETE", machine["Links"]["Self"])
    server_thumbprint = _server_thumbprint(client, root)
    instance = f" --instance {inv.current.name}" if inv.current.name else ""
    log.info(
        "The Octopus Server is still trusted. If you wish to remove trust for this Octopus "
        f"Server, use 'Tentacle configure --remove-trust={server_thumbprint}{instance}'"
    )
    log.info("Machine deregistered successfully")


COMMANDS = (
    Command(
        "register-with",
        "Registers this machine as a deployment target with an Octopus Server",
        _register,
        (
            *API_OPTIONS,
            Option("name=", "Name of the machine when registered; the default is the hostname"),
            Option("policy=", "The name of a machine policy that applies to this machine"),
            Option(
                "h|publicHostName=",
                "An Octopus-accessible DNS name/IP address for this machine; the default is the "
                "hostname",
            ),
            Option("f|force", "Allow overwriting of existing machines"),
            Option(
                "comms-style=",
                "The communication style to use - either TentacleActive or TentaclePassive; the "
                "default is TentaclePassive",
            ),
            Option(
                "proxy=",
                "When using passive communication, the name of a proxy that Octopus should "
                "connect to the Tentacle through",
            ),
            Option(
                "space=",
                "The name of the space within which this command will be executed. The default "
                "space will be used if omitted.",
            ),
            Option(
                "server-comms-port=",
                "When using active communication, the comms port on the Octopus Server; the "
                "default is 10943",
            ),
            Option(
                "server-comms-address=",
                "When using active communication, the address of the Octopus Server",
            ),
            Option(
                "server-web-socket=",
                "When using active communication over websockets, the address of the Octopus "
                "Server, eg 'wss://example.com/OctopusComms'",
            ),
            Option(
                "server-subscription-id=",
                "When using active communication, the subscription id (poll://...) to use",
            ),
            Option(
                "tentacle-comms-port=",
                "When using passive communication, the comms port that the Octopus Server is "
                "instructed to call back on to reach this machine; defaults to the configured "
                "listening port",
            ),
            Option(
                "env|environment=",
                "The environment name, slug or Id to add the machine to - e.g., 'Production'; "
                "specify this argument multiple times to add multiple environments",
            ),
            Option(
                "r|role=",
                "The machine role that the machine will assume - e.g., 'web-server'; specify "
                "this argument multiple times to add multiple roles",
            ),
            Option(
                "tenant=",
                "A tenant who the machine will be connected to; specify this argument multiple "
                "times to add multiple tenants",
            ),
            Option(
                "tenanttag=",
                "A tenant tag which the machine will be tagged with - e.g., 'CustomerType/VIP'; "
                "specify this argument multiple times to add multiple tenant tags",
            ),
            Option(
                "tenanted-deployment-participation=",
                "How the machine should participate in tenanted deployments. Allowed values are "
                "Untenanted, TenantedOrUntenanted or Tenanted.",
            ),
        ),
        validate=validate_api_options,
    ),
    Command(
        "deregister-from",
        "Deregisters this deployment target from an Octopus Server",
        _deregister,
        (
            *API_OPTIONS,
            Option("m|multiple", "Deregister all machines that use the same thumbprint"),
            Option(
                "space=",
                "The space which this machine will be deregistered from; the default value is "
                "the Default space, if one is designated.",
            ),
        ),
        validate=validate_api_options,
    ),
)
