"""octoboot.certificates, imported on first use: most calls (version, show-configuration,
configure, service) need no certificate, and importing cryptography costs more than all the
rest of a call. The archive is started for every command, like the real Tentacle."""

from typing import Any


def __getattr__(name: str) -> Any:
    from octoboot import certificates

    return getattr(certificates, name)
