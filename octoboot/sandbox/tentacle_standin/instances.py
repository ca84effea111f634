"""The machine-wide instance index, creating instances, and how a command picks its instance.

Index: `<root>/Tentacle/Instances/<name lower-cased, spaces as dashes>.config`, each a JSON
{Name, ConfigurationFilePath}; `<root>` is $TentacleMachineConfigurationHomeDirectory or
/etc/octopus. Messages and rules follow ApplicationInstanceStore, ApplicationInstanceManager and
ApplicationInstanceSelector of the real Tentacle.
"""

from __future__ import annotations

import os

from . import paths
from .failures import ControlledFailure
from .jsontext import dumps, loads
from .log import Log
from .settings import EMPTY_FILE, HOME, Settings

APPLICATION = "Tentacle"
DEFAULT_INSTANCE = APPLICATION
ROOTLESS_CONFIG = f"{APPLICATION}.config"


class Instance:
    """The instance a command works on; name is None for one given only by --config."""

    __slots__ = ("_settings", "config_path", "name")

    def __init__(self, name: str | None, config_path: str) -> None:
        self.name, self.config_path = name, config_path
        self._settings: Settings | None = None

    def settings(self) -> Settings:
        """The configuration, read once per command: the log's folder and the command
        itself ask for it, and nothing else in the process writes the file."""
        if self._settings is None:
            self._settings = Settings(self.config_path)
        return self._settings


def machine_config_root() -> str:
    # The real Tentacle's own override, spelled as it spells it.
    configured = os.environ.get("TentacleMachineConfigurationHomeDirectory")  # noqa: SIM112
    return configured or "/etc/octopus"


def _index_dir() -> str:
    return paths.join(machine_config_root(), APPLICATION, "Instances")


def _index_file(name: str) -> str:
    return paths.join(_index_dir(), name.replace(" ", "-").lower() + ".config")


def _read_record(path: str) -> dict:
    with open(path, encoding="utf-8-sig") as file:
        return loads(file.read(), indent=2)  # type: ignore[return-value]


def list_instances() -> list[Instance]:
    directory = _index_dir()
    if not os.path.isdir(directory):
        return []
    found = []
    for entry in os.listdir(directory):
        record = _read_record(paths.join(directory, entry))
        found.append(Instance(record["Name"], paths.pure(record["ConfigurationFilePath"])))
    return sorted(found, key=lambda i: str(i.name).casefold())


def _available() -> str:
    return ", ".join(str(i.name) for i in list_instances())


def create(name: str | None, config: str | None, home: str | None, log: Log) -> Instance:
    """create-instance: make the config file if missing, set its home, index it; safe to repeat.

    With neither a name nor a config path the instance is "rootless": ./Tentacle.config and no
    index entry, as in the real Tentacle. With a name but no config path the real Tentacle also
    uses ./Tentacle.config; the stand-in uses the packaged wizard's
    `<root>/<name>/tentacle-<name>.config` instead, so instances never depend on the working
    directory of an SSH session.
    """
    if config:
        config_path = paths.absolute(config)
    elif name:
        config_path = paths.join(machine_config_root(), name, f"tentacle-{name}.config")
    else:
        config_path = paths.absolute(ROOTLESS_CONFIG)
    home_dir = paths.absolute(home) if home else paths.parent(config_path)
    os.makedirs(paths.parent(config_path), exist_ok=True)
    if os.path.exists(config_path):
        log.info(f"Configuration file at {config_path} already exists.")
    else:
        log.info(f"Creating empty configuration file: {config_path}")
        with open(config_path, "w", encoding="utf-8") as file:
            file.write(EMPTY_FILE)
    log.info(f"Setting home directory to: {home_dir}")
    Settings(config_path).set(HOME, home_dir)
    if not name and not config:
        return Instance(None, config_path)
    name = name or DEFAULT_INSTANCE
    _register(name, config_path, log)
    return Instance(name, config_path)


def _register(name: str, config_path: str, log: Log) -> None:
    path = _index_file(name)
    os.makedirs(paths.parent(path), exist_ok=True)
    record = _read_record(path) if os.path.exists(path) else {"Name": name}
    record["ConfigurationFilePath"] = config_path
    with open(path, "w", encoding="utf-8") as file:
        file.write(dumps(record, indent=2))
    log.info(f"Saving instance: {record['Name']}")


def delete(name: str, log: Log) -> None:
    try:  # noqa: SIM105 (contextlib is a whole module's import for this one call)
        os.unlink(_index_file(name))
    except FileNotFoundError:
        pass
    log.info(f"Deleted instance: {name}")


def select(name: str | None, config: str | None) -> Instance:
    """The instance named by --instance, else the file given by --config, else the default."""
    if name and name.strip():
        instance = _find(name)
    elif config and config.strip():
        instance = Instance(None, paths.pure(config))
    elif os.path.exists(ROOTLESS_CONFIG):
        instance = Instance(None, paths.absolute(ROOTLESS_CONFIG))
    else:
        instance = _default()
    if not os.path.isfile(instance.config_path):
        if instance.name is None:
            raise ControlledFailure(
                f"The configuration file at {instance.config_path} could not be located at the "
                "specified location."
            )
        # The missing space after "present." is in the real message too.
        raise ControlledFailure(
            f"The configuration file for instance {instance.name} could not be located at the "
            f"specified location {instance.config_path}. The file might have been manually "
            "removed without properly removing the instance and as such it is still listed as "
            "present.The instance must be created again before you can interact with it."
        )
    return instance


def _find(name: str) -> Instance:
    matches = [i for i in list_instances() if str(i.name).casefold() == name.casefold()]
    if not matches:
        raise ControlledFailure(
            f"Instance {name} of {APPLICATION} has not been configured on this machine. "
            f"Available instances: {_available()}."
        )
    if len(matches) == 1:
        return matches[0]
    exact = [i for i in matches if i.name == name]
    if not exact:
        raise ControlledFailure(
            f"Instance {name} of {APPLICATION} could not be matched to one of the existing "
            f"instances: {_available()}."
        )
    return exact[0]


def _default() -> Instance:
    instances = list_instances()
    default = [i for i in instances if i.name == DEFAULT_INSTANCE]
    if default:
        return default[0]
    if len(instances) == 1:
        return instances[0]
    if len(instances) > 1:
        raise ControlledFailure(
            f"There is more than one instance of {APPLICATION} configured on this machine. "
            "Please pass --instance=INSTANCENAME when invoking this command to target a "
            f"specific instance. Available instances: {_available()}."
        )
    raise ControlledFailure(
        f"Unable to find default instance of {APPLICATION}. Available instances: {_available()}."
    )
