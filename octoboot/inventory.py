"""machines/<env>.toml → Machine records, and picking machines by --env, --host and name patterns.

One file per environment; its stem is the environment key. The format, with a full example, is in
docs/inventory.md. Everything is checked on load, so that a typo stops the run before any host is
touched; every error is one line that names the file. A file's machines may come from a command
instead (`[source] command`, inventory_source.py), checked exactly as the file's own.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import re
import tomllib
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from octoboot.errors import ConfigError
from octoboot.inventory_source import DEFAULT_TIMEOUT, machines_from_command

# How a machine takes part in tenanted deployments (Octopus' TenantedDeploymentMode).
UNTENANTED = "Untenanted"
PARTICIPATIONS = (UNTENANTED, "TenantedOrUntenanted", "Tenanted")
# Machine names end up in file names (identity store, logs) and on command lines.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# The version is pasted into URLs, paths and remote commands: keep it to what versions look like.
_VERSION = re.compile(r"[0-9]+(\.[0-9]+)*([-+][0-9A-Za-z.+-]+)?")
_REMOTE_SCHEMES = ("http://", "https://")
TARGET, WORKER = "target", "worker"  # what Octopus registers a machine as (`kind`)
LISTENING, POLLING = "listening", "polling"  # who opens the connection (`communication`)
DEFAULT_POLLING_PORT = 10943  # the Octopus Server's polling (comms) port
# A host name label (RFC 1123): letters, digits and '-', not at either end, at most 63.
_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# "user@host:port" and its parts, to say where the user and the port go instead.
_USER_HOST_PORT = re.compile(
    r"(?:(?P<user>[^@]*)@)?(?P<host>\[[^\]]*\]|[^:]*)(?::(?P<port>[0-9]+))?"
)


def name_key(name: str) -> str:
    """What makes two Octopus names (machines, workers, environments, spaces) the same:
    Octopus.Client's FindByName compares them trimmed and ignoring case
    (OrdinalIgnoreCase), and the server refuses a second machine of the same name. Here,
    not in octopus.py, so that reading the inventory does not import the HTTP client."""
    return name.strip().casefold()


@dataclass(frozen=True)
class SshOptions:
    """How to reach a machine. None leaves the choice to ssh_config, Fabric or octoboot's default
    (known_hosts: octoboot's own file in its state dir; config: the user's ~/.ssh/config)."""

    user: str | None = None
    port: int | None = None
    key: Path | None = None
    config: Path | None = None
    known_hosts: Path | None = None
    sudo: bool = False
    connect_timeout: float = 10.0
    deadline: float = 900.0


# status only reads, and should answer in seconds: a hung host must not hold the table for
# the inventory's deadline (SshOptions.deadline); --deadline changes it. `Status.DEADLINE`,
# kept here beside the other so that `inv`'s help shows both without importing status.
STATUS_DEADLINE = 30.0


@dataclass(frozen=True)
class TentacleOptions:
    """What to install and how to configure it. `source` is an http(s) URL the host downloads, or
    an absolute local path pushed from the controller; it may contain "{version}"."""

    instance: str = "Tentacle"
    port: int = 10933
    version: str | None = None
    source: str | None = None
    app_dir: str = "/home/Octopus/Applications"

    @property
    def source_is_local(self) -> bool:
        return self.source is not None and not self.source.startswith(_REMOTE_SCHEMES)

    def resolved_source(self) -> str | None:
        """The source with {version} filled in (loading refuses {version} without a version)."""
        if self.source is None or self.version is None:
            return self.source
        return self.source.replace("{version}", self.version)


@dataclass(frozen=True)
class OctopusOverride:
    """An environment's own Octopus: every field set here wins over the settings' one."""

    url: str | None = None
    space: str | None = None
    api_key_env: str | None = None
    api_key_file: Path | None = None
    # Where polling Tentacles connect to: the server's host (or this address, e.g. a load
    # balancer) and its polling port.
    polling_port: int | None = None
    server_comms_address: str | None = None


@dataclass(frozen=True)
class PollingProxy:
    """The proxy a polling Tentacle reaches its Octopus Server through (the Tentacle's own
    `polling-proxy` settings, on the host). No password: see _no_proxy_password."""

    host: str
    port: int = 80  # the Tentacle's default when none is given
    username: str | None = None


@dataclass(frozen=True)
class Registration:
    """What the machine's Octopus record carries besides environment and roles, named as the
    inventory names it (registration.py finds the Ids, once per run)."""

    machine_policy: str | None = None  # name or Id; None: the server's default policy
    tenants: tuple[str, ...] = ()  # names, slugs or Ids
    tenant_tags: tuple[str, ...] = ()  # canonical tag names, "TagSet/Tag"
    # Untenanted, TenantedOrUntenanted or Tenanted; None: Tenanted with tenants or tags, else
    # Untenanted (as Octopus.Client decides for a record that does not say)
    tenanted: str | None = None
    proxy: str | None = None  # a listening machine's Octopus-side proxy: name or Id
    polling_proxy: PollingProxy | None = None  # a polling machine's own proxy (on the host)


@dataclass(frozen=True)
class Machine:
    name: str
    env_key: str
    environment: str
    roles: tuple[str, ...]
    address: str
    public_hostname: str | None
    ssh: SshOptions
    tentacle: TentacleOptions
    octopus: OctopusOverride | None
    source_file: Path
    kind: str = TARGET
    worker_pools: tuple[str, ...] = ()  # names, slugs or Ids; workers only
    communication: str = LISTENING

    @property
    def is_worker(self) -> bool:
        return self.kind == WORKER

    @property
    def is_polling(self) -> bool:
        return self.communication == POLLING

    @property
    def placement(self) -> str:
        """Where Octopus puts it, for reports: its environment, or its worker pools."""
        return f"pools {', '.join(self.worker_pools)}" if self.is_worker else self.environment

    registration: Registration = Registration()


@dataclass(frozen=True)
class Environment:
    key: str
    name: str
    file: Path
    machines: tuple[Machine, ...]
    octopus: OctopusOverride | None = None

    def unlisted_machine(self, name: str) -> Machine:
        """A machine this file does not list (an Octopus record left behind): its name and
        this file's environment and Octopus, nothing to reach a host by."""
        return Machine(
            name=name,
            env_key=self.key,
            environment=self.name,
            roles=(),
            address=name,
            public_hostname=None,
            ssh=SshOptions(),
            tentacle=TentacleOptions(),
            octopus=self.octopus,
            source_file=self.file,
        )


@dataclass(frozen=True)
class Inventory:
    directory: Path
    environments: dict[str, Environment]

    def select(
        self, env: str | None = None, hosts: Sequence[str] = (), limits: Sequence[str] = ()
    ) -> list[Machine]:
        """The machines of `env` (or of every environment when only hosts are given), narrowed to
        `hosts` (exact names) and to names matching any of the `limits` globs; inventory order."""
        if env is None and not hosts:
            raise ConfigError(
                f"choose --env or --host (environments: {', '.join(self.environments) or 'none'})"
            )
        scope = [self._environment(env)] if env is not None else list(self.environments.values())
        machines = [machine for environment in scope for machine in environment.machines]
        if hosts:
            # A host found without --env is in one environment only, so its name is enough.
            wanted = {self._host(host, scope, env).name for host in hosts}
            machines = [machine for machine in machines if machine.name in wanted]
        elif not machines:
            raise ConfigError(
                f"{scope[0].file} lists no machines: add [[machines]] entries (or have its "
                "[source] command print some)"
            )
        for pattern in limits:
            if not any(fnmatchcase(machine.name, pattern) for machine in machines):
                raise ConfigError(
                    f"limit pattern {pattern!r} matches none of the selected machines "
                    f"({_some(machine.name for machine in machines)})"
                )
        if limits:
            machines = [m for m in machines if any(fnmatchcase(m.name, p) for p in limits)]
        return machines

    def files_listing(self, name: str) -> list[Path]:
        """The inventory files that list a machine of this name (compared as Octopus does,
        without case)."""
        return [
            environment.file
            for environment in self.environments.values()
            if any(name_key(m.name) == name_key(name) for m in environment.machines)
        ]

    def environment(self, key: str) -> Environment:
        """The environment of machines/<key>.toml (ConfigError, with hints, if none)."""
        return self._environment(key)

    def _environment(self, key: str) -> Environment:
        try:
            return self.environments[key]
        except KeyError:
            raise ConfigError(
                f"no environment {key!r}: there is no {self.directory / f'{key}.toml'}"
                f"{_did_you_mean(key, self.environments)}"
                f" (known: {', '.join(self.environments) or 'none'})"
            ) from None

    def _host(self, name: str, scope: list[Environment], env: str | None) -> Machine:
        found = [m for environment in scope for m in environment.machines if m.name == name]
        if len(found) == 1:
            return found[0]
        if found:
            files = " and ".join(str(machine.source_file) for machine in found)
            keys = " or ".join(machine.env_key for machine in found)
            raise ConfigError(f"machine {name!r} is in {files}: add --env {keys} to choose one")
        machines = [m for environment in scope for m in environment.machines]
        if env is None:
            raise ConfigError(
                f"no machine {name!r} in {self.directory / '*.toml'}"
                f"{_did_you_mean_machine(name, machines)}"
            )
        elsewhere = [
            str(environment.file)
            for environment in self.environments.values()
            if any(m.name == name for m in environment.machines)
        ]
        hint = (
            f" (it is in {', '.join(elsewhere)})"
            if elsewhere
            else _did_you_mean_machine(name, machines)
        )
        raise ConfigError(f"no machine {name!r} in {scope[0].file}{hint}")


def load_inventory(machines_dir: Path) -> Inventory:
    """Every machines_dir/*.toml, keyed by file stem (dot files, e.g. editor locks, are skipped)."""
    if not machines_dir.is_dir():
        raise ConfigError(
            f"no machines directory {machines_dir}: create it with one <env>.toml per environment "
            "(format: docs/inventory.md)"
        )
    files = sorted(
        path
        for path in machines_dir.glob("*.toml")
        if path.is_file() and not path.name.startswith(".")
    )
    if not files:
        raise ConfigError(
            f"{machines_dir} has no *.toml files: add one per environment, e.g. "
            f"{machines_dir / 'qa.toml'} (format: docs/inventory.md)"
        )
    return Inventory(machines_dir, {env.key: env for env in map(load_environment, files)})


def load_environment(path: Path) -> Environment:
    """One machines/<env>.toml; relative paths in it are relative to its folder."""
    data = _read_toml(path)
    if not SAFE_NAME.fullmatch(path.stem):
        raise ConfigError(
            f"{path}: the file name is the environment key used by --env: name it with letters, "
            "digits, '.', '_' or '-', like qa.toml"
        )
    base = path.parent.resolve()
    top = _check_table(path, "", data, _TOP_SPEC)
    ssh = SshOptions(**_check_table(path, "[ssh]", top.get("ssh", {}), _ssh_spec(base)))
    tentacle = TentacleOptions(
        **_check_table(path, "[tentacle]", top.get("tentacle", {}), _tentacle_spec(base))
    )
    if tentacle.source and "{version}" in tentacle.source and tentacle.version is None:
        raise ConfigError(
            f'{path}: [tentacle] source contains {{version}}: set version = "..." under [tentacle]'
        )
    octopus_values = _check_table(path, "[octopus]", top.get("octopus", {}), _octopus_spec(base))
    if {"api_key_env", "api_key_file"} <= octopus_values.keys():
        raise ConfigError(f"{path}: [octopus]: set api_key_env or api_key_file, not both")
    octopus = OctopusOverride(**octopus_values) if octopus_values else None
    kind = top.get("kind", TARGET)
    if kind == WORKER:
        for key in ("roles", "environment"):
            if key in top:
                raise ConfigError(
                    f'{path}: a worker file (kind = "worker") takes no {key}: workers join '
                    "worker pools (worker_pools = [...]); remove it, or make the file's "
                    'machines targets (kind = "target")'
                )
    environment = top.get("environment", path.stem)
    template = Machine(  # the file's defaults, which each [[machines]] entry overrides
        name="",
        env_key=path.stem,
        environment=environment,
        roles=top.get("roles", ()),
        address="",
        public_hostname=None,
        ssh=ssh,
        tentacle=tentacle,
        octopus=octopus,
        source_file=path,
        kind=kind,
        worker_pools=top.get("worker_pools", ()),
        communication=top.get("communication", LISTENING),
        registration=Registration(**{k: top[k] for k in _REGISTRATION_SPEC if k in top}),
    )
    _check_registration(path, "", template.registration, kind)
    spec = _machine_spec(base)
    entries, origin = top.get("machines", []), ""
    if "source" in top:
        source = _check_table(path, "[source]", top["source"], _SOURCE_SPEC)
        if "command" not in source:
            raise ConfigError(f'{path}: [source]: missing command = "..." (required)')
        if "machines" in top:
            raise ConfigError(
                f"{path}: take the machines from [source] command or list them in "
                "[[machines]], not both"
            )
        timeout = source.get("timeout", DEFAULT_TIMEOUT)
        entries = machines_from_command(path, source["command"], timeout)
        origin = f"[source] command {source['command']!r}: "
    machines: list[Machine] = []
    for number, entry in enumerate(entries, start=1):
        machine = _machine(path, number, entry, spec, template, origin)
        _refuse_duplicate(path, machine, machines, origin)
        machines.append(machine)
    return Environment(path.stem, environment, path, tuple(machines), octopus)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None


def _machine(
    path: Path,
    number: int,
    entry: dict[str, Any],
    spec: Mapping[str, Check],
    template: Machine,
    origin: str = "",
) -> Machine:
    """One machine from its table; origin: where the table came from, when not the file
    itself (a [source] command)."""
    raw_name = entry.get("name")
    if isinstance(raw_name, str):
        where = f"{origin}machine {raw_name!r}"
    else:
        where = f"{origin}machine {number}" if origin else f"[[machines]] entry {number}"
    values = _check_table(path, where, entry, spec)
    if "name" not in values:
        raise ConfigError(f'{path}: {where}: missing name = "..." (required)')
    kind = values.get("kind", template.kind)
    roles, pools = _roles_or_pools(path, where, kind, values, template)
    ssh = {key: values[key] for key in _SSH_KEYS if key in values}
    given = {k: values[k] for k in _REGISTRATION_SPEC if k in values}
    tentacle = template.tentacle
    if "tentacle_port" in values:
        tentacle = dataclasses.replace(tentacle, port=values["tentacle_port"])
    if "address" not in values and (problem := host_problem(values["name"])):
        raise ConfigError(
            f"{path}: {where}: name: with no address, the name is the host to connect to, "
            f'and {problem}: set address = "..." to the host'
        )
    registration = dataclasses.replace(template.registration, **given)
    _check_registration(path, f"{where}: ", registration, kind)
    return dataclasses.replace(
        template,
        name=values["name"],
        roles=roles,
        address=values.get("address", values["name"]),
        public_hostname=values.get("public_hostname"),
        ssh=dataclasses.replace(template.ssh, **ssh),
        tentacle=tentacle,
        kind=kind,
        worker_pools=pools,
        communication=values.get("communication", template.communication),
        registration=registration,
    )


def _roles_or_pools(
    path: Path, where: str, kind: str, values: dict[str, Any], template: Machine
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A target's roles, or a worker's pools: Octopus gives a worker no environment and no
    roles, and a target no pools (the file's defaults of the other kind do not apply)."""
    if kind == WORKER:
        if "roles" in values:
            raise ConfigError(
                f'{path}: {where}: a worker (kind = "worker") takes no roles: remove roles, '
                'or make it a target (kind = "target")'
            )
        pools = values.get("worker_pools", template.worker_pools)
        if not pools:
            raise ConfigError(
                f"{path}: {where}: a worker needs worker pools: set worker_pools = [...] at the "
                "top of the file or on the machine"
            )
        return (), pools
    if "worker_pools" in values:
        raise ConfigError(
            f'{path}: {where}: worker_pools is for workers: add kind = "worker", or remove '
            "worker_pools (a target joins an environment with roles)"
        )
    roles = values.get("roles", template.roles)
    if not roles:
        raise ConfigError(
            f"{path}: {where}: no roles: set roles = [...] at the top of the file or on the machine"
        )
    return roles, ()


def _check_registration(path: Path, where: str, registration: Registration, kind: str) -> None:
    tenancy = registration.tenants or registration.tenant_tags
    if kind == WORKER and (tenancy or registration.tenanted is not None):
        raise ConfigError(
            f"{path}: {where}a worker takes no tenants, tenant_tags or tenanted (Octopus keeps "
            'tenancy on deployment targets): remove them, or make it a target (kind = "target")'
        )
    if registration.tenanted == UNTENANTED and (registration.tenants or registration.tenant_tags):
        raise ConfigError(
            f'{path}: {where}tenanted = "{UNTENANTED}" with tenants or tenant_tags: an untenanted '
            'machine takes no tenants; use "Tenanted" or "TenantedOrUntenanted", or drop them'
        )


def _refuse_duplicate(path: Path, machine: Machine, earlier: list[Machine], origin: str) -> None:
    for other in earlier:
        if other.name == machine.name:
            raise ConfigError(f"{path}: {origin}machine {machine.name!r} is listed twice")
        if name_key(other.name) == name_key(machine.name):
            raise ConfigError(
                f"{path}: {origin}machines {other.name!r} and {machine.name!r} differ only in "
                "case: give them names that differ in more than case"
            )


# --- value checks: each returns the value to keep, or raises _Invalid with what is wrong ---


class _Invalid(ValueError):
    """What is wrong with one value; the caller adds the file, the table and the key."""


Check = Callable[[Any], Any]

_KINDS = {
    bool: "true/false",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "a table",
    type(None): "null",  # from a [source] command's JSON
}


def _expect(value: Any, kind: type | tuple[type, ...], expected: str) -> None:
    # TOML booleans are Python ints: keep `port = true` from passing as 1.
    if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
        raise _Invalid(f"expected {expected}, got {_KINDS.get(type(value), 'a date/time')}")


def _text(value: Any) -> str:
    _expect(value, str, "a string")
    if not value.strip():
        raise _Invalid("must not be empty")
    if any(unicodedata.category(char) == "Cc" for char in value):
        raise _Invalid("must not contain line breaks or other control characters")
    return value


def host_problem(text: str, port_key: str = "port") -> str | None:
    """Why `text` cannot be a host octoboot connects to or names, or None if it can.

    A host is a name of RFC 1123 labels (which is also what an ssh_config alias may be), an
    IPv4 address, or an IPv6 address without brackets. Nothing else passes: paramiko pastes the
    host into ssh_config `Match exec` commands, which a shell runs on the controller, so a
    `$(...)`, `;` or backtick in it would run there (as CVE-2023-51385 did in OpenSSH), and a
    '%' would be expanded as an ssh_config token. port_key: the key that holds the port."""
    parts = _USER_HOST_PORT.fullmatch(text)
    if parts and (parts["user"] or parts["port"]):
        extra = {"user": f'user = "{parts["user"]}"', "port": f"{port_key} = {parts['port']}"}
        given = [what for what in extra if parts[what]]
        return (
            f"{text!r} holds a {' and a '.join(given)}: give only the host, "
            f"{parts['host'].strip('[]')!r}, and the {' and the '.join(given)} with "
            f"{'their own keys' if len(given) > 1 else 'its own key'} "
            f"({', '.join(extra[what] for what in given)})"
        )
    if text.startswith("[") and text.endswith("]"):
        return f"{text!r}: write an IPv6 address without brackets, e.g. {text[1:-1]!r}"
    if ":" in text:
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            return f"{text!r} is not an IPv6 address"
        if "%" in text:
            return f"{text!r}: an IPv6 zone ('%...') is not supported; use a global address"
        return None
    labels = text.split(".")
    if len(text) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        return (
            f"{text!r} is not a host name, an IPv4 or an IPv6 address: a host name (or ssh_config "
            "alias) is labels of letters, digits and '-' (not first or last, at most 63) "
            "separated by '.'"
        )
    if all(label.isdigit() for label in labels):
        try:
            ipaddress.IPv4Address(text)
        except ValueError:
            return f"{text!r} is not an IPv4 address (four numbers 0 to 255, no leading zeros)"
    return None


def _host(port_key: str) -> Check:
    def check(value: Any) -> str:
        problem = host_problem(_text(value), port_key)
        if problem:
            raise _Invalid(problem)
        return value

    return check


def _machine_name(value: Any) -> str:
    if not SAFE_NAME.fullmatch(_text(value)):
        raise _Invalid(
            f"{value!r} is not a safe machine name: use 1 to 63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def _roles(value: Any) -> tuple[str, ...]:
    _expect(value, list, "a list of strings")
    return tuple(dict.fromkeys(_text(role) for role in value))


def _choice(*allowed: str) -> Check:
    def check(value: Any) -> str:
        if _text(value) not in allowed:
            raise _Invalid(f"must be {' or '.join(map(repr, allowed))}, got {value!r}")
        return value

    return check


def _https_address(value: Any) -> str:
    try:
        url = urlsplit(_text(value))
        url.port  # noqa: B018 -- raises ValueError for a port out of range
    except ValueError:
        url = urlsplit("")
    if url.scheme != "https" or not url.hostname or url.path not in ("", "/") or url.query:
        raise _Invalid(f"must be the polling endpoint as https://host:port, got {value!r}")
    return value


def _names(value: Any) -> tuple[str, ...]:
    _expect(value, list, "a list of strings")
    return tuple(dict.fromkeys(_text(name) for name in value))


def _tags(value: Any) -> tuple[str, ...]:
    tags = _names(value)
    for tag in tags:
        tag_set, slash, name = tag.partition("/")
        if not (slash and tag_set.strip() and name.strip()):
            raise _Invalid(
                f"{tag!r} is not a tag's canonical name: write the tag set's name, '/' and the "
                'tag\'s name, e.g. "Region/EU"'
            )
    return tags


def _participation(value: Any) -> str:
    for choice in PARTICIPATIONS:
        if _text(value).strip().lower() == choice.lower():
            return choice
    raise _Invalid(f"must be one of {', '.join(PARTICIPATIONS)}, not {value!r}")


def _no_proxy_password(value: Any) -> None:
    raise _Invalid(
        "refused: the Tentacle takes a proxy password only on its command line "
        "(polling-proxy --proxyPassword), where any user of the host can read it (ps, "
        "/proc/PID/cmdline); let the proxy admit these machines without one (e.g. by address), "
        "or set it on the host yourself"
    )


def _polling_proxy(value: Any) -> PollingProxy:
    spec = {"host": _host("port"), "port": _port, "username": _text, "password": _no_proxy_password}
    values = _checked(_table(value), spec)
    if "host" not in values:
        raise _Invalid('missing host = "..." (the proxy\'s host name or address)')
    return PollingProxy(**values)


def _port(value: Any) -> int:
    _expect(value, int, "an integer")
    if not 1 <= value <= 65535:
        raise _Invalid(f"must be a port number from 1 to 65535, got {value}")
    return value


def _seconds(value: Any) -> float:
    _expect(value, (int, float), "a number of seconds")
    if not (math.isfinite(value) and value > 0):
        raise _Invalid(f"must be a positive number of seconds, got {value}")
    return float(value)


def _flag(value: Any) -> bool:
    _expect(value, bool, "true or false")
    return value


def _variable_name(value: Any) -> str:
    # Never echo this value: a common slip is pasting the key itself here.
    if not _VARIABLE_NAME.fullmatch(_text(value)):
        raise _Invalid(
            "must be the NAME of an environment variable (letters, digits, '_') that holds "
            "the key, not the key itself"
        )
    return value


def _version(value: Any) -> str:
    if not _VERSION.fullmatch(_text(value)):
        raise _Invalid(f"must be a version like 8.3.2977, got {value!r}")
    return value


def _remote_dir(value: Any) -> str:
    if not _text(value).startswith("/"):
        raise _Invalid(f"must be an absolute path on the host, got {value!r}")
    return value


def _local_path(base: Path) -> Check:
    def check(value: Any) -> Path:
        path = Path(_text(value)).expanduser()
        return path if path.is_absolute() else (base / path).resolve()

    return check


def _source(base: Path) -> Check:
    local = _local_path(base)

    def check(value: Any) -> str:
        if "://" not in _text(value):
            return str(local(value))
        url = urlsplit(value)
        if value.startswith(_REMOTE_SCHEMES) and url.netloc:
            return value
        if url.scheme == "file" and url.netloc in ("", "localhost") and url.path.startswith("/"):
            # Here: urllib.request (and http.client with it) is 2 ms of every start-up.
            from urllib.request import url2pathname

            return url2pathname(url.path)
        raise _Invalid("must be an http(s) URL, a file:///absolute/path URL or a local path")

    return check


def _table(value: Any) -> dict[str, Any]:
    _expect(value, dict, "a table")
    return value


def _tables(value: Any) -> list[dict[str, Any]]:
    _expect(value, list, "an array of tables ([[machines]])")
    for entry in value:
        _expect(entry, dict, "a [[machines]] table in every entry")
    return value


# The machine's Octopus record besides environment and roles: at the top of the file, or on
# a machine, where it wins.
_REGISTRATION_SPEC: dict[str, Check] = {
    "machine_policy": _text,
    "tenants": _names,
    "tenant_tags": _tags,
    "tenanted": _participation,
    "proxy": _text,
    "polling_proxy": _polling_proxy,
}

_TOP_SPEC: dict[str, Check] = {
    "environment": _text,
    "roles": _roles,
    "kind": _choice(TARGET, WORKER),
    "worker_pools": _roles,
    "communication": _choice(LISTENING, POLLING),
    **_REGISTRATION_SPEC,
    "octopus": _table,
    "ssh": _table,
    "tentacle": _table,
    "source": _table,
    "machines": _tables,
}

_SOURCE_SPEC: dict[str, Check] = {"command": _text, "timeout": _seconds}


def _ssh_spec(base: Path) -> dict[str, Check]:
    path = _local_path(base)
    return {
        "user": _text,
        "port": _port,
        "key": path,
        "config": path,
        "known_hosts": path,
        "sudo": _flag,
        "connect_timeout": _seconds,
        "deadline": _seconds,
    }


def _tentacle_spec(base: Path) -> dict[str, Check]:
    return {
        "instance": _machine_name,  # it becomes a path: /etc/octopus/<instance>/
        "port": _port,
        "version": _version,
        "source": _source(base),
        "app_dir": _remote_dir,
    }


def _octopus_spec(base: Path) -> dict[str, Check]:
    return {
        "url": _text,
        "space": _text,
        "api_key_env": _variable_name,
        "api_key_file": _local_path(base),
        "polling_port": _port,
        "server_comms_address": _https_address,
    }


def _machine_spec(base: Path) -> dict[str, Check]:
    return {
        "name": _machine_name,  # first, so that later errors can name the machine
        "address": _host("port"),
        "roles": _roles,
        "kind": _TOP_SPEC["kind"],
        "worker_pools": _roles,
        "communication": _TOP_SPEC["communication"],
        "public_hostname": _host("tentacle_port"),
        "tentacle_port": _port,
        **_REGISTRATION_SPEC,
        **_ssh_spec(base),
    }


_SSH_KEYS = tuple(_ssh_spec(Path()))

# Where a key belongs, to explain an unknown key that is valid elsewhere. Later entries win, so
# "port" points at [ssh] and "roles" at the top of the file.
_HOME = {
    **dict.fromkeys(_machine_spec(Path()), "in a [[machines]] entry"),
    **dict.fromkeys(_octopus_spec(Path()), "under [octopus]"),
    **dict.fromkeys(_tentacle_spec(Path()), "under [tentacle]"),
    **dict.fromkeys(_SOURCE_SPEC, "under [source]"),
    **dict.fromkeys(_SSH_KEYS, "under [ssh] or in a [[machines]] entry"),
    **dict.fromkeys(
        _TOP_SPEC,
        "at the top of the file, above the first [table] (TOML reads a key below a [table] or "
        "[[machines]] header as part of that table)",
    ),
}


def _check_table(
    path: Path, where: str, table: Mapping[str, Any], spec: Mapping[str, Check]
) -> dict[str, Any]:
    prefix = f"{path}: {where}: " if where else f"{path}: "
    try:
        return _checked(table, spec)
    except _Invalid as problem:
        raise ConfigError(f"{prefix}{problem}") from None


def _checked(table: Mapping[str, Any], spec: Mapping[str, Check]) -> dict[str, Any]:
    """The table's values, each checked; _Invalid names the key that is wrong."""
    for key in table:
        if key not in spec:
            raise _Invalid(_unknown_key(key, spec))
    values = {}
    for key, check in spec.items():
        if key in table:
            try:
                values[key] = check(table[key])
            except _Invalid as problem:
                raise _Invalid(f"{key}: {problem}") from None
    return values


def _unknown_key(key: str, valid: Iterable[str]) -> str:
    if key in _HOME:
        return f"key {key!r} does not belong here: put it {_HOME[key]}"
    close = difflib.get_close_matches(key, list(valid), n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(valid)}"
    return f"unknown key {key!r} ({hint})"


def _did_you_mean(word: str, candidates: Iterable[str]) -> str:
    by_folded = {candidate.casefold(): candidate for candidate in candidates}
    close = difflib.get_close_matches(word.casefold(), by_folded, n=3)
    return f"; did you mean {' or '.join(repr(by_folded[c]) for c in close)}?" if close else ""


def _did_you_mean_machine(name: str, machines: Sequence[Machine]) -> str:
    """Suggestions for a machine name not found. A machine reached at that name comes first:
    a renamed machine keeps its address, so its old name is often the address of the new."""
    renamed = [
        m.name for m in machines if m.address != m.name and m.address.casefold() == name.casefold()
    ]
    if renamed:
        return f"; did you mean {' or '.join(map(repr, renamed))} (address {name!r})?"
    return _did_you_mean(name, [m.name for m in machines])


def _some(names: Iterable[str], limit: int = 10) -> str:
    names = list(names)
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
