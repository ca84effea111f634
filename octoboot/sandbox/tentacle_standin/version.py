"""`version`, and the version other commands report; in a module of its own, so that the call
a probe makes on every machine loads no configuration reader, certificate code or .NET value
parsers it does not use (every Tentacle command is a new process)."""

from __future__ import annotations

import os
import sys

from .command import FORMAT_OPTION, INSTALL_DIR, Command, Invocation, output_format
from .jsontext import dumps


def version_info() -> dict:
    """The version the archive builder wrote into the install dir, in the shapes Tentacle shows."""
    with open(os.path.join(INSTALL_DIR, "VERSION"), encoding="utf-8") as file:
        version = file.read().strip()
    core, _, prerelease = version.partition("-")
    # GitVersion's informational form; the "commit" is derived so it is stable per version.
    import _sha1  # hashlib's own SHA-1: hashlib loads libcrypto first (3 ms of CPU)

    commit = _sha1.sha1(version.encode()).hexdigest()
    return {
        "InformationalVersion": f"{version}+Branch.main.Sha.{commit}",
        "MajorMinorPatch": core,
        "NuGetVersion": version,
        "SourceBranchName": "main",
        "IsPrerelease": bool(prerelease),
    }


def _version(inv: Invocation) -> None:
    info = version_info()
    if output_format(inv) == "json":
        sys.stdout.write(dumps(info, indent=2))
    else:
        sys.stdout.write(info["InformationalVersion"])


COMMANDS = (
    Command(
        "version",
        "Show the Tentacle version information",
        _version,
        (FORMAT_OPTION,),
        standard=False,
        quiet=True,
    ),
)
