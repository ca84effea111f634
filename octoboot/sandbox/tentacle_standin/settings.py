"""One instance's configuration file: the XML `<octopus-settings>` key/value store.

Keys and defaults are those of `Configuration/TentacleConfiguration.cs`. Every change is written
through at once (atomically, mode 0600), as the real XmlFileKeyValueStore saves on each set.
"""

from __future__ import annotations

import base64
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

from . import crypto

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import rsa

    from .pfx import Identity

HOME = "Octopus.Home"
PORT = "Tentacle.Services.PortNumber"
NO_LISTEN = "Tentacle.Services.NoListen"
LISTEN_IP = "Tentacle.Services.ListenIP"
TRUSTED_SERVERS = "Tentacle.Communication.TrustedOctopusServers"
APPLICATION_DIRECTORY = "Tentacle.Deployment.ApplicationDirectory"
CERTIFICATE = "Tentacle.Certificate"
CERTIFICATE_THUMBPRINT = "Tentacle.CertificateThumbprint"

DEFAULT_PORT = 10933
EMPTY_FILE = "<?xml version='1.0' encoding='UTF-8' ?><octopus-settings></octopus-settings>"

# Octopus.Client's CommunicationStyle.TentaclePassive, stored as its number like Newtonsoft does.
LISTENING = 1


# expat's "no element found" and "unclosed token": the document stops too early.
_CUT_SHORT = (3, 5)


class InvalidOperationException(Exception):
    """A configuration file that is not XML, as .NET's XmlSerializer reports it: "There is an
    error in XML document (line, position)." around the XmlException (the class has the .NET
    name because the error line shows it). The real store lets it escape
    (XmlKeyValueStore.LoadSettings), so every command on the instance is an unexpected
    failure, exit 100, until the file is replaced."""

    def __init__(self, data: bytes, error: ET.ParseError) -> None:
        if not data.strip():
            line, position, inner = 0, 0, "Root element is missing."
        else:
            line, position = error.position[0], error.position[1] + 1
            reason = "Unexpected end of file has occurred"
            if error.code not in _CUT_SHORT:
                reason = str(error).split(":")[0].capitalize()
            inner = f"{reason}. Line {line}, position {position}."
        super().__init__(
            f"There is an error in XML document ({line}, {position}). "
            f"---> System.Xml.XmlException: {inner}"
        )


class Settings:
    def __init__(self, path: Path) -> None:
        self.path = path
        data = path.read_bytes()
        try:
            root = ET.fromstring(data)
        except ET.ParseError as error:
            raise InvalidOperationException(data, error) from None
        self._values = {e.get("key", ""): e.text or "" for e in root.iter("set")}

    def get(self, key: str) -> str | None:
        return self._values.get(key)

    def set(self, key: str, value: str | None) -> None:
        if value is None:
            self._values.pop(key, None)
        else:
            self._values[key] = value
        self._save()

    def _save(self) -> None:
        root = ET.Element("octopus-settings")
        for key in sorted(self._values):
            ET.SubElement(root, "set", key=key).text = self._values[key]
        ET.indent(root)
        temporary = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            ET.ElementTree(root).write(out, encoding="utf-8", xml_declaration=True)
        os.replace(temporary, self.path)

    @property
    def home_dir(self) -> Path:
        return Path(self.get(HOME) or self.path.parent)

    @property
    def port(self) -> int:
        return int(self.get(PORT) or DEFAULT_PORT)

    @property
    def no_listen(self) -> bool:
        return (self.get(NO_LISTEN) or "").lower() == "true"

    @property
    def listen_ip(self) -> str | None:
        return self.get(LISTEN_IP) or None

    @property
    def trusted_servers(self) -> list[dict]:
        """[{Thumbprint, CommunicationStyle, Address, Squid, SubscriptionId}, ...]"""
        return json.loads(self.get(TRUSTED_SERVERS) or "[]")

    def set_trusted_servers(self, servers: list[dict]) -> None:
        self.set(TRUSTED_SERVERS, json.dumps(servers, separators=(",", ":")))

    def add_or_update_trust(self, thumb: str, style: int, address: str | None = None) -> None:
        """Replace the entry with the same thumbprint (any case) and address, or add one."""
        self.add_or_update_server(
            {
                "Thumbprint": thumb,
                "CommunicationStyle": style,
                "Address": address,
                "Squid": None,
                "SubscriptionId": None,
            }
        )

    def add_or_update_server(self, server: dict) -> None:
        """AddOrUpdateTrustedOctopusServer: the entry with the same thumbprint and address
        (both without case) is replaced, or server is added."""
        thumb, address = server["Thumbprint"].upper(), (server.get("Address") or "").lower()
        servers = [
            s
            for s in self.trusted_servers
            if not (
                s["Thumbprint"].upper() == thumb and (s.get("Address") or "").lower() == address
            )
        ]
        self.set_trusted_servers([*servers, server])

    def remove_trust(self, thumb: str) -> None:
        # Exact match, case and all, like the real RemoveTrustedOctopusServersWithThumbprint.
        self.set_trusted_servers([s for s in self.trusted_servers if s["Thumbprint"] != thumb])

    def identity(self) -> Identity | None:
        encoded = self.get(CERTIFICATE)
        return crypto.open_pfx(base64.b64decode(encoded), None) if encoded else None

    def set_identity(self, identity: Identity) -> None:
        # The real Tentacle encrypts this PFX with a machine key (/etc/machine-id), so a copied
        # config file does not carry the identity; the stand-in keeps it as a plain base64 PFX
        # (an imported plain PFX as it came).
        self.set(CERTIFICATE, base64.b64encode(identity.pfx).decode())
        self.set(CERTIFICATE_THUMBPRINT, identity.thumbprint)

    def set_certificate(self, key: rsa.RSAPrivateKey, cert: x509.Certificate) -> None:
        self.set_identity(crypto.identity(key, cert))

    @property
    def thumbprint(self) -> str | None:
        return self.get(CERTIFICATE_THUMBPRINT) if self.get(CERTIFICATE) else None
