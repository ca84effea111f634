"""The machine-wide instance index, creating instances, and how a command picks its instance.

Index: `<root>/Tentacle/Instances/<name lower-cased, spaces as dashes>.config`, each a JSON
{Name, ConfigurationFilePath}; `<root>` is $TentacleMachineConfigurationHomeDirectory or
/etc/octopus. Messages and rules follow ApplicationInstanceStore, ApplicationInstanceManager and
ApplicationInstanceSelector of the real Tentacle.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .failures import ControlledFailure
from .log import Log
from .settings import EMPTY_FILE, HOME, Settings

APPLICATION = "Tentacle"
DEFAULT_INSTANCE = APPLICATION
ROOTLESS_CONFIG = f"{APPLICATION}.config"


class Instance:
    """The instance a command works on; name is None for one given only by --config."""

    __slots__ = ("config_path", "name")

    def __init__(self, name: str | None, config_path: Path) -> None:
        self.name, self.config_path = name, config_path

    def settings(self) -> Settings:
        return Settings(self.config_path)


def machine_config_root() -> Path:
    # The real Tentacle's own override, spelled as it spells it.
    configured = os.environ.get("TentacleMachineConfigurationHomeDirectory")  # noqa: SIM112
    return Path(configured or "/etc/octopus")


def _index_dir() -> Path:
    return machine_config_root() / APPLICATION / "Instances"


def _index_file(name: str) -> Path:
    return _index_dir() / (name.replace(" ", "-").lower() + ".config")


def list_instances() -> list[Instance]:
    if not _index_dir().is_dir():
        return []
    found = []
    for path in _index_dir().iterdir():
        record = json.loads(path.read_text(encoding="utf-8-sig"))
        found.append(Instance(record["Name"], Path(record["ConfigurationFilePath"])))
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
        config_path = Path(config).absolute()
    elif name:
        config_path = machine_config_root() / name / f"tentacle-{name}.config"
    else:
        config_path = Path(ROOTLESS_CONFIG).absolute()
    home_dir = Path(home).absolute() if home else config_path.parent
    config_path.parent.mkdir(parents=True, exist_ok=True)
    if config_path.exists():
        log.info(f"Configuration file at {config_path} already exists.")
    else:
        log.info(f"Creating empty configuration file: {config_path}")
        config_path.write_text(EMPTY_FILE, encoding="utf-8")
    log.info(f"Setting home directory to: {home_dir}")
    Settings(config_path).set(HOME, str(home_dir))
    if not name and not config:
        return Instance(None, config_path)
    name = name or DEFAULT_INSTANCE
    _register(name, config_path, log)
    return Instance(name, config_path)


def _register(name: str, config_path: Path, log: Log) -> None:
    path = _index_file(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = json.loads(path.read_text(encoding="utf-8-sig")) if path.exists() else {"Name": name}
    record["ConfigurationFilePath"] = str(config_path)
    path.write_text(json.dumps(record, indent=2), encoding="utf-8")
    log.info(f"Saving instance: {record['Name']}")


def delete(name: str, log: Log) -> None:
    _index_file(name).unlink(missing_ok=True)
    log.info(f"Deleted instance: {name}")


def select(name: str | None, config: str | None) -> Instance:
    """The instance named by --instance, else the file given by --config, else the default."""
    if name and name.strip():
        instance = _find(name)
    elif config and config.strip():
        instance = Instance(None, Path(config))
    elif Path(ROOTLESS_CONFIG).exists():
        instance = Instance(None, Path(ROOTLESS_CONFIG).absolute())
    else:
        instance = _default()
    if not instance.config_path.is_file():
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
