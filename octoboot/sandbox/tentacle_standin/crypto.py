"""octoboot.certificates, imported on first use: most calls (version, show-configuration,
configure, service) need no certificate, and importing cryptography costs more than all the
rest of a call. The archive is started for every command, like the real Tentacle; a plain
PFX, the one a bootstrap meets, is opened by the `openssl` command (`pfx.py`)."""

from __future__ import annotations

TYPE_CHECKING = False  # typing's import alone is a tenth of a short command's
if TYPE_CHECKING:
    from typing import Any

    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import rsa

    from .pfx import Identity


def __getattr__(name: str) -> Any:
    from octoboot import certificates

    return getattr(certificates, name)


def identity(key: rsa.RSAPrivateKey, cert: x509.Certificate) -> Identity:
    """key and cert as the stand-in keeps them: in a PFX without a password."""
    from octoboot import certificates

    from .pfx import Identity

    key_pem, cert_pem = certificates.to_pem(key, cert)
    return Identity(certificates.to_pfx(key, cert, None), key_pem, cert_pem, key.key_size)


def open_pfx(data: bytes, password: str | None) -> Identity:
    """The identity in a PFX; octoboot.certificates.CertificateError if it cannot be
    opened. Only a PFX with a password, or one `openssl` refuses, loads
    cryptography."""
    from .pfx import open_plain

    plain = None if password else open_plain(data)
    if plain is not None:
        return plain
    from octoboot import certificates

    return identity(*certificates.load_pfx(data, password))
