"""What a command is, and what it is handed when it runs."""

from __future__ import annotations

import os

from .failures import ControlledFailure
from .log import Log
from .options import Option, Parsed

TYPE_CHECKING = False  # typing's import alone is a tenth of a short command's CPU
if TYPE_CHECKING:
    from collections.abc import Callable  # collections: 1 ms of a short command's CPU

    from .instances import Instance

# The launcher sits in the install dir (.../tentacle/Tentacle) and this file in .../tentacle/lib/.
INSTALL_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
EXECUTABLE = os.path.join(INSTALL_DIR, "Tentacle")

INSTANCE_OPTIONS = (
    Option("instance=", "Name of the instance to use"),
    Option("config=", "Configuration file to use"),
)

_FORMATS = ("text", "json")
FORMAT_OPTION = Option("format=", "The format of the output (text,json). Defaults to text.")


class Invocation:
    __slots__ = ("instance", "log", "parsed", "restart_needed")

    def __init__(self, parsed: Parsed, log: Log) -> None:
        self.parsed, self.log = parsed, log
        self.instance: Instance | None = None
        self.restart_needed = False

    def vote_for_restart(self) -> None:
        self.restart_needed = True

    @property
    def current(self) -> Instance:
        """The selected instance; only standard commands have one."""
        assert self.instance is not None, "only a standard command has an instance"
        return self.instance


def output_format(inv: Invocation) -> str:
    """--format's value, checked as the Tentacle checks it."""
    chosen = inv.parsed.value("format") or "text"
    if chosen.lower() not in _FORMATS:
        raise ControlledFailure(f"The format '{chosen}' is not supported. Try text or json.")
    return chosen.lower()


class Command:
    """One Tentacle command.

    standard: like AbstractStandardCommand, it takes --instance/--config and its instance is
    loaded before it runs (failing with the selector's message); it ends with the restart
    warning when it changed the configuration.
    quiet: its output is data, so informational console logging is off (SuppressConsoleLogging).
    validate: checks the options once they parse, before the instance is loaded (the real
    command's option-set validation).
    """

    __slots__ = (
        "aliases",
        "description",
        "name",
        "options",
        "quiet",
        "run",
        "standard",
        "validate",
    )

    def __init__(
        self,
        name: str,
        description: str,
        run: Callable[[Invocation], None],
        options: tuple[Option, ...] = (),
        aliases: tuple[str, ...] = (),
        standard: bool = True,
        quiet: bool = False,
        validate: Callable[[Parsed], None] | None = None,
    ) -> None:
        self.name, self.description, self.run, self.options = name, description, run, options
        self.aliases, self.standard, self.quiet, self.validate = aliases, standard, quiet, validate

    @property
    def all_options(self) -> tuple[Option, ...]:
        return (INSTANCE_OPTIONS if self.standard else ()) + self.options
