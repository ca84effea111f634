"""The Tentacle option grammar: Mono.Options, as the real Tentacle embeds it.

Faithful to `Octopus.Tentacle/Internals/Options/OptionSet.cs`:
- names are case-insensitive and may start with `--`, `-` or `/`;
- a value follows `=` or `:`, or is the next argument, whatever that argument looks like;
- a switch ignores any value written after it (`--force=no` still forces);
- `name+` / `name-` are accepted as the switch itself;
- single-letter options may be bundled after one `-` (`-fb`);
- `--` ends option processing (it is dropped, the rest is left unrecognized);
- a value option at the very end, without its value, is an OptionException, which the real
  program reports as an unexpected error (exit 100), not a controlled failure.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # collections: 1 ms of a short command's CPU
    from collections.abc import Iterable, Sequence

_HELP_COLUMN = 29
_HELP_WIDTH = 80


class OptionError(Exception):
    """The command line cannot be parsed (Mono.Options' OptionException)."""


# Plain classes, not dataclasses: every Tentacle command is a new process, and importing
# dataclasses (inspect, ast, dis...) was a tenth of a short command's CPU.
class Option:
    """One option, declared with a Mono.Options prototype such as `f|from-file=`."""

    __slots__ = ("description", "hidden", "names", "prototype", "takes_value")

    def __init__(self, prototype: str, description: str = "", hidden: bool = False) -> None:
        self.prototype, self.description, self.hidden = prototype, description, hidden
        parts = prototype.split("|")
        self.takes_value = any(p.endswith("=") for p in parts)
        self.names = tuple(p.rstrip("=") for p in parts)

    def matches(self, name: str) -> bool:
        return name.lower() in (n.lower() for n in self.names)


class Parsed:
    """What one parse found: (option, value) pairs in command-line order, and the leftovers."""

    __slots__ = ("pairs", "unrecognized")

    def __init__(self) -> None:
        self.pairs: list[tuple[Option, str | None]] = []
        self.unrecognized: list[str] = []

    def flag(self, name: str) -> bool:
        return any(opt.matches(name) for opt, _ in self.pairs)

    def values(self, name: str) -> list[str]:
        return [value or "" for opt, value in self.pairs if opt.matches(name)]

    def value(self, name: str) -> str | None:
        """The last value given (each occurrence overwrites the previous one, as in Tentacle)."""
        found = self.values(name)
        return found[-1] if found else None


def parse(options: Sequence[Option], args: Iterable[str]) -> Parsed:
    """Parse args against options; raises OptionError where Mono.Options would throw."""
    table = {name.lower(): opt for opt in options for name in opt.names}
    result = Parsed()
    pending: tuple[Option, str] | None = None
    processing = True
    for arg in args:
        if not processing:
            result.unrecognized.append(arg)
        elif pending:
            result.pairs.append((pending[0], arg))
            pending = None
        elif arg == "--":
            processing = False
        else:
            pending = _parse_one(arg, table, result)
    if pending:
        raise OptionError(f"Missing required value for option '{pending[1]}'.")
    return result


def _parse_one(arg: str, table: dict[str, Option], result: Parsed) -> tuple[Option, str] | None:
    """Record arg in result; return (option, spelling) when its value is the next argument."""
    split = _split(arg)
    if split is None:
        result.unrecognized.append(arg)
        return None
    flag, name, sep, value = split
    option = table.get(name.lower())
    if option:
        if not option.takes_value:
            result.pairs.append((option, None))
        elif value is not None:
            result.pairs.append((option, value))
        else:
            return option, flag + name
        return None
    toggled = table.get(name[:-1].lower()) if name[-1] in "+-" else None
    if toggled:
        result.pairs.append((toggled, arg if name[-1] == "+" else None))
        return None
    if flag == "-" and name[0].lower() in table:
        return _parse_bundle(name + (sep or "") + (value or ""), table, result)
    result.unrecognized.append(arg)
    return None


def _split(arg: str) -> tuple[str, str, str | None, str | None] | None:
    """(flag, name, separator, value) as Mono.Options' regex
    `^(--|-|/)([^:=]+)(?:([:=])(.*))?$` splits an argument; None if it is no option.
    (Written out: re, with the enum it imports, cost a short command a tenth of its CPU.)"""
    for flag in ("--", "-", "/"):
        if not arg.startswith(flag):
            continue
        rest = arg[len(flag) :]
        end = min((i for i in (rest.find(":"), rest.find("=")) if i >= 0), default=len(rest))
        if end:  # the name is never empty: a shorter flag is tried, as the regex backtracks
            if end == len(rest):
                return flag, rest, None, None
            return flag, rest[:end], rest[end], rest[end + 1 :]
    return None


def _parse_bundle(
    letters: str, table: dict[str, Option], result: Parsed
) -> tuple[Option, str] | None:
    for i, letter in enumerate(letters):
        option = table.get(letter.lower())
        if option is None:
            raise OptionError(f"Cannot bundle unregistered option '-{letter}'.")
        if option.takes_value:
            rest = letters[i + 1 :]
            if rest:
                result.pairs.append((option, rest))
                return None
            return option, "-" + letter
        result.pairs.append((option, None))
    return None


def describe(options: Sequence[Option]) -> str:
    """The option table of `<command> --help`, laid out like Mono.Options' help writer."""
    lines = []
    for option in options:
        if option.hidden:
            continue
        first, *others = option.names
        head = ("  -" if len(first) == 1 else "      --") + first
        head += "".join((", -" if len(n) == 1 else ", --") + n for n in others)
        if option.takes_value:
            head += "=VALUE"
        import textwrap  # help only

        text = textwrap.wrap(option.description, _HELP_WIDTH - _HELP_COLUMN) or [""]
        if len(head) < _HELP_COLUMN:
            lines.append(head.ljust(_HELP_COLUMN) + text[0])
        else:
            lines.extend([head, " " * _HELP_COLUMN + text[0]])
        lines.extend(" " * (_HELP_COLUMN + 2) + more for more in text[1:])
    return "\n".join(lines)
