"""The .NET parsers the real commands apply to option values, with their failure.

int.Parse, bool.Parse and IPAddress.Parse throw FormatException, which is not a controlled
failure: the real Tentacle exits 100 for `--port=abc`, not 1.
"""

from __future__ import annotations


class FormatException(Exception):
    pass


def parse_int(value: str) -> int:
    # The regex ^\s*[+-]?\d+\s*$ (Unicode \s and \d, as str.strip and str.isdecimal
    # take them), written out: re and its enum cost a short command a tenth of its CPU.
    digits = value.strip()
    if digits[:1] in ("+", "-"):
        digits = digits[1:]
    if not digits.isdecimal():
        raise FormatException(f"The input string '{value}' was not in a correct format.")
    return int(value)


def parse_bool(value: str) -> bool:
    word = value.strip().lower()
    if word not in ("true", "false"):
        raise FormatException(f"String '{value}' was not recognized as a valid Boolean.")
    return word == "true"


def parse_ip(value: str) -> str:
    import ipaddress  # configure --listenIpAddress only

    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise FormatException("An invalid IP address was specified.") from None
