"""`Tentacle <command> [options]`: dispatch and exit codes, after the real OctopusProgram.

Before a command sees its arguments, the common switches (--help, and the deprecated --nologo,
a no-op, and --noconsolelogging, which silences informational output) and then the host
switches (--console, --noninteractive, --monitorMutex=) are taken out. The command name is the
first argument, lower-cased, with leading `-` and `/` trimmed. Exit codes: 0 success,
1 controlled failure, 2 unknown or missing command (help is printed), 100 anything unexpected
(a row of `=` and the exception on stderr).
"""

from __future__ import annotations

import gc
import os

from . import control
from .command import EXECUTABLE, INSTALL_DIR, Command, Invocation
from .failures import ControlledFailure
from .log import Log
from .options import Option, describe, parse

EXIT_SUCCESS = 0
EXIT_CONTROLLED_FAILURE = 1
EXIT_UNKNOWN_COMMAND = 2
EXIT_GENERAL_EXCEPTION = 100

COMMON_OPTIONS = (
    Option("nologo", "DEPRECATED: Don't print title or version information.", hidden=True),
    Option(
        "noconsolelogging",
        "DEPRECATED: Don't log informational messages to the console (stdout).",
        hidden=True,
    ),
    Option("help", "Show detailed help for this command"),
)
HOST_OPTIONS = (Option("console"), Option("noninteractive"), Option("monitorMutex="))


def _help(inv: Invocation) -> None:
    """`help [command]`; never fails on what follows the command name."""
    args = inv.parsed.unrecognized
    first = args[0] if args else ""
    if not first[:1].isalpha():
        print(general_help())
        return
    command = find(first)
    if command is None:
        inv.log.error(f"Command '{first}' is not supported")
        print(f"See '{os.path.basename(EXECUTABLE)} help'")
    else:
        print(command_help(command))


HELP = Command("help", "Prints this help text", _help, aliases=("?", "h"), standard=False)
# Which module holds each command, so that a call imports only its own: every Tentacle call
# is a new process, and importing ssl, urllib and the agent for `version` tripled its cost.
# (tests/unit/test_tentacle_options.py checks this against the modules' COMMANDS.)
MODULES = {
    "commands": (
        "create-instance", "delete-instance", "list-instances", "new-certificate",
        "import-certificate", "show-thumbprint", "show-configuration", "configure",
    ),
    "version": ("version",),
    "service": ("service",),
    "comms": ("server-comms",),
    "agent": ("agent", "run"),
    "registration": ("register-with", "deregister-from"),
    "proxy": ("polling-proxy",),
}  # fmt: skip


def _module_commands(module: str) -> tuple[Command, ...]:
    # __import__ rather than importlib.import_module: importlib's own import (with warnings)
    # is 0.3 ms of every command.
    return __import__(f"{__package__}.{module}", fromlist=("COMMANDS",)).COMMANDS


def all_commands() -> tuple[Command, ...]:
    return (*(c for module in MODULES for c in _module_commands(module)), HELP)


def find(name: str) -> Command | None:
    name = name.lower()
    module = next((m for m, names in MODULES.items() if name in names), None)
    candidates = _module_commands(module) if module else (HELP,)
    return next((c for c in candidates if name == c.name or name in c.aliases), None)


def general_help() -> str:
    lines = [f"Usage: {os.path.basename(EXECUTABLE)} <command> [<options>]", ""]
    lines += ["Where <command> is one of: ", ""]
    for command in sorted(all_commands(), key=lambda c: c.name):
        lines += ["  " + command.name.ljust(15), "   " + command.description]
    return "\n".join([*lines, "", "Or use <command> --help for more details."])


def command_help(command: Command) -> str:
    return "\n".join(
        [
            f"Usage: {os.path.basename(EXECUTABLE)} {command.name} [<options>]",
            "",
            "Where [<options>] is any of: ",
            "",
            describe(command.all_options),
            "",
            "Or one of the common options: ",
            "",
            describe(COMMON_OPTIONS),
        ]
    )


def main(args: list[str]) -> int:
    log = Log()
    try:
        control.sleep_like_a_startup()
        control.record_invocation([EXECUTABLE, *args])
        faults = control.load_faults()
        if not control.finish_first_run(INSTALL_DIR, faults):
            return control.INSTALL_FAILURE_EXIT_CODE
        common = parse(COMMON_OPTIONS, args)
        args = common.unrecognized
        log.console = not common.flag("noconsolelogging")
        name = args[0].lower().lstrip("-/") if args else ""
        control.hang_if_told(name, faults)
        command = find(name) if name else None
        gc.enable()  # the launcher held it off while the command's modules were imported
        if command is None or common.flag("help"):
            _run(HELP, args, log)
            return EXIT_SUCCESS if command else EXIT_UNKNOWN_COMMAND
        return _run(command, parse(HOST_OPTIONS, args[1:]).unrecognized, log)
    except ControlledFailure as failure:
        log.error(str(failure))
        return EXIT_CONTROLLED_FAILURE
    except Exception as exc:
        log.error("=" * 79)
        log.error(f"{type(exc).__name__}: {exc}")
        import traceback  # only here: it costs every call a tenth of its imports

        log.verbose(traceback.format_exc())
        return EXIT_GENERAL_EXCEPTION


def _run(command: Command, args: list[str], log: Log) -> int:
    log.console = log.console and not command.quiet
    parsed = parse(command.all_options, args)
    if parsed.unrecognized and command is not HELP:
        raise ControlledFailure(
            "Unrecognized command line arguments: " + " ".join(parsed.unrecognized)
        )
    if command.validate:
        command.validate(parsed)
    inv = Invocation(parsed, log)
    if command.standard:
        from . import instances  # not for version or help: the configuration's reader

        inv.instance = instances.select(parsed.value("instance"), parsed.value("config"))
        log.write_to(inv.instance.settings().home_dir)
    command.run(inv)
    if inv.restart_needed:
        from .instances import APPLICATION

        restarted = APPLICATION if inv.current.name else "service"
        log.warn(f"These changes require a restart of the {restarted}.")
    return EXIT_SUCCESS
