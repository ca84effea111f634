"""The .NET parsers the real commands apply to option values, with their failure.

int.Parse, bool.Parse and IPAddress.Parse throw FormatException, which is not a controlled
failure: the real Tentacle exits 100 for `--port=abc`, not 1.
"""

from __future__ import annotations

import ipaddress
import re

_INT = re.compile(r"^\s*[+-]?\d+\s*$")


class FormatException(Exception):
    pass


def parse_int(value: str) -> int:
    if not _INT.match(value):
        raise FormatException(f"The input string '{value}' was not in a correct format.")
    return int(value)


def parse_bool(value: str) -> bool:
    word = value.strip().lower()
    if word not in ("true", "false"):
        raise FormatException(f"String '{value}' was not recognized as a valid Boolean.")
    return word == "true"


def parse_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise FormatException("An invalid IP address was specified.") from None
