"""Self-signed Tentacle certificates, PFX files and thumbprints (pure, no I/O).

Shared by the identity store (which mints one certificate per machine) and the sandbox
(the Octopus stand-in's server certificate, the Tentacle stand-in's `new-certificate`).
"""

from __future__ import annotations

import datetime as dt
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from octoboot.errors import OctobootError

TENTACLE_COMMON_NAME = "Octopus Tentacle"


class CertificateError(OctobootError):
    """A PFX could not be read: wrong password, corrupt file, no private key, or a key that
    is not RSA (a Tentacle's certificate is RSA)."""


def new_self_signed(
    common_name: str = TENTACLE_COMMON_NAME, *, years: int = 100
) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A 2048-bit RSA key and a self-signed certificate, shaped like the Tentacle's own."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365 * years))
        .sign(key, hashes.SHA256())
    )
    return key, cert


def thumbprint(cert: x509.Certificate) -> str:
    """SHA-1 of the DER encoding, 40 upper-case hex digits: what Octopus calls a thumbprint."""
    return thumbprint_of_der(cert.public_bytes(serialization.Encoding.DER))


def thumbprint_of_der(der: bytes) -> str:
    return hashlib.sha1(der).hexdigest().upper()


def to_pfx(
    key: rsa.RSAPrivateKey, cert: x509.Certificate, password: str | None, *, name: str = ""
) -> bytes:
    """A PKCS#12 (PFX) blob with the key and certificate, encrypted with password if given."""
    encryption = (
        serialization.BestAvailableEncryption(password.encode())
        if password
        else serialization.NoEncryption()
    )
    return pkcs12.serialize_key_and_certificates(name.encode() or None, key, cert, None, encryption)


def load_pfx(data: bytes, password: str | None) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """The key and first certificate of a PFX; CertificateError if it cannot be opened."""
    try:
        key, cert, _ = pkcs12.load_key_and_certificates(
            data, password.encode() if password else None
        )
    except ValueError as exc:
        raise CertificateError("could not open the PFX: wrong password or not a PFX file") from exc
    if key is None or cert is None:
        raise CertificateError("the PFX holds no private key and certificate")
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CertificateError("the PFX's private key is not an RSA key")
    return key, cert


def is_whole_pfx(data: bytes) -> bool:
    """Whether data is one whole DER SEQUENCE, as a PFX file is: tells a truncated, empty or
    overwritten file from a whole one that a wrong password cannot open."""
    if len(data) < 2 or data[0] != 0x30:
        return False
    first = data[1]
    if first < 0x80:
        length, header = first, 2
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or len(data) < 2 + count:
            return False
        length, header = int.from_bytes(data[2 : 2 + count], "big"), 2 + count
    return header + length == len(data)


def to_pem(key: rsa.RSAPrivateKey, cert: x509.Certificate) -> tuple[bytes, bytes]:
    """(key PEM, certificate PEM), unencrypted: for ssl contexts, written to 0600 files."""
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)
