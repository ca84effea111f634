"""One instance's configuration file: the XML `<octopus-settings>` key/value store.

Keys and defaults are those of `Configuration/TentacleConfiguration.cs`. Every change is written
through at once (atomically, mode 0600), as the real XmlFileKeyValueStore saves on each set.
"""

from __future__ import annotations

import binascii
import os
from xml.parsers import expat

from . import crypto, paths
from .jsontext import dumps, loads

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

_COMPACT = (",", ":")  # how the trusted servers are kept in their setting

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

    def __init__(self, data: bytes, error: expat.ExpatError) -> None:
        if not data.strip():
            line, position, inner = 0, 0, "Root element is missing."
        else:
            line, position = error.lineno, error.offset + 1
            reason = "Unexpected end of file has occurred"
            if error.code not in _CUT_SHORT:
                reason = str(error).split(":")[0].capitalize()
            inner = f"{reason}. Line {line}, position {position}."
        super().__init__(
            f"There is an error in XML document ({line}, {position}). "
            f"---> System.Xml.XmlException: {inner}"
        )


# The file is read by expat and written by hand, byte for byte as xml.etree.ElementTree read
# and wrote it (ElementTree's import, on top of expat, cost every command about 4 ms of CPU;
# tests/unit/test_tentacle_settings_xml.py holds the two equal).


def _read_sets(data: bytes) -> list[tuple[str, str]]:
    """(key, text) of every `<set>` element in document order, as
    `ET.fromstring(data).iter("set")` gave them; expat.ExpatError if data is not XML."""
    found: list[list[str]] = []  # each <set> as its [key, text]
    collecting = False  # text goes to the <set> last started until any element starts or ends

    def start(name: str, attributes: dict[str, str]) -> None:
        nonlocal collecting
        collecting = name == "set"
        if collecting:
            found.append([attributes.get("key", ""), ""])

    def end(_: str) -> None:
        nonlocal collecting
        collecting = False

    def text(data: str) -> None:
        if collecting:
            found[-1][1] += data

    parser = expat.ParserCreate(None, "}")  # namespaces as ElementTree's parser takes them
    parser.StartElementHandler, parser.EndElementHandler = start, end
    parser.CharacterDataHandler = text
    parser.Parse(data, True)
    return [(key, value) for key, value in found]


def _document(values: dict[str, str]) -> bytes:
    """What ElementTree wrote for <octopus-settings> with one indented <set key=..> per
    value, sorted by key: its declaration, its escapes, `<set key="k" />` for an empty one."""
    if not values:
        return b"<?xml version='1.0' encoding='utf-8'?>\n<octopus-settings />"
    lines = ["<?xml version='1.0' encoding='utf-8'?>\n<octopus-settings>"]
    for key in sorted(values):
        attribute = _escape(key, attribute=True)
        value = values[key]
        lines.append(
            f'  <set key="{attribute}">{_escape(value)}</set>'
            if value
            else f'  <set key="{attribute}" />'
        )
    return "\n".join([*lines, "</octopus-settings>"]).encode("utf-8", "xmlcharrefreplace")


def _escape(text: str, *, attribute: bool = False) -> str:
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if attribute:
        text = text.replace('"', "&quot;").replace("\r", "&#13;").replace("\n", "&#10;")
        text = text.replace("\t", "&#09;")
    return text


class Settings:
    def __init__(self, path: str) -> None:
        self.path = path
        with open(path, "rb") as file:
            data = file.read()
        try:
            self._values = dict(_read_sets(data))
        except expat.ExpatError as error:
            raise InvalidOperationException(data, error) from None
        self._identity: Identity | None = None  # the certificate, once opened

    def get(self, key: str) -> str | None:
        return self._values.get(key)

    def set(self, key: str, value: str | None) -> None:
        if key == CERTIFICATE:
            self._identity = None
        if value is None:
            self._values.pop(key, None)
        else:
            self._values[key] = value
        self._save()

    def _save(self) -> None:
        temporary = self.path + ".tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(_document(self._values))
        os.replace(temporary, self.path)

    @property
    def home_dir(self) -> str:
        return paths.pure(self.get(HOME) or paths.parent(self.path))

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
        return loads(self.get(TRUSTED_SERVERS) or "[]", separators=_COMPACT)  # type: ignore[return-value]

    def set_trusted_servers(self, servers: list[dict]) -> None:
        self.set(TRUSTED_SERVERS, dumps(servers, separators=_COMPACT))

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
        """The certificate, opened once per process (an `openssl` run): the service's
        listener and each server it polls all present it."""
        # set() forgets it when the certificate changes, so it is None while there is none.
        if self._identity is None and (encoded := self.get(CERTIFICATE)):
            self._identity = crypto.open_pfx(binascii.a2b_base64(encoded), None)
        return self._identity

    def set_identity(self, identity: Identity) -> None:
        # The real Tentacle encrypts this PFX with a machine key (/etc/machine-id), so a copied
        # config file does not carry the identity; the stand-in keeps it as a plain base64 PFX
        # (an imported plain PFX as it came). binascii is what base64.b64encode calls: base64
        # imports re (and enum), a tenth of import-certificate's CPU.
        self._values[CERTIFICATE] = binascii.b2a_base64(identity.pfx, newline=False).decode()
        self._values[CERTIFICATE_THUMBPRINT] = identity.thumbprint
        self._save()
        self._identity = identity

    def set_certificate(self, key: rsa.RSAPrivateKey, cert: x509.Certificate) -> None:
        self.set_identity(crypto.identity(key, cert))

    @property
    def thumbprint(self) -> str | None:
        return self.get(CERTIFICATE_THUMBPRINT) if self.get(CERTIFICATE) else None
