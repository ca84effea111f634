"""A PFX without a password, opened by the `openssl` command instead of cryptography.

Importing cryptography costs a Tentacle command more than all the rest of it (85 ms of CPU
against 4 ms for `openssl pkcs12`), and the PFX files the stand-in meets on a bootstrap are
plain: the one octoboot imports, and the one the instance's configuration keeps.
`open_plain` asks OpenSSL's own PKCS #12 reader (MAC checked with no password, then an
empty one) for exactly one private key and one certificate (their key size only when asked:
one `openssl` process per open); anything else (a password, a
damaged file, a chain) gives None and the caller asks cryptography, whose answer (or error)
stays the stand-in's.
"""

from __future__ import annotations

import _sha1  # hashlib's own SHA-1: hashlib loads libcrypto first (3 ms of CPU per command)
import base64
import os
import re
import subprocess

TYPE_CHECKING = False  # typing's import alone is a tenth of a short command's
if TYPE_CHECKING:
    import ssl

_PEM = re.compile(rb"-----BEGIN ([A-Z ]+)-----\n.*?\n-----END \1-----\n", re.DOTALL)
_KEY_BITS = re.compile(rb"\((\d+) bit")


class Identity:
    """A certificate and its private key, as PEM, and the PFX they came from."""

    def __init__(
        self, pfx: bytes, key_pem: bytes, cert_pem: bytes, key_bits: int | None = None
    ) -> None:
        self.pfx, self.key_pem, self.cert_pem, self._key_bits = pfx, key_pem, cert_pem, key_bits

    @property
    def key_bits(self) -> int:
        """The private key's size, asked of `openssl pkey` only when needed (import-certificate
        warns of a small key; the service does not ask), else of cryptography."""
        if self._key_bits is None:
            described = _openssl(["pkey", "-noout", "-text_pub"], self.key_pem)
            bits = _KEY_BITS.search(described or b"")
            if bits is None:
                from octoboot import certificates

                self._key_bits = certificates.load_pfx(self.pfx, None)[0].key_size
            else:
                self._key_bits = int(bits.group(1))
        return self._key_bits

    @property
    def cert_der(self) -> bytes:
        return base64.b64decode(b"".join(self.cert_pem.splitlines()[1:-1]))

    @property
    def thumbprint(self) -> str:
        return thumbprint_of_der(self.cert_der)

    def pem(self) -> tuple[bytes, bytes]:
        """(PKCS #8 key PEM, certificate PEM)."""
        return self.key_pem, self.cert_pem

    def load_into(self, context: ssl.SSLContext) -> None:
        """Give context this certificate and key. load_cert_chain reads files only: the key
        goes into an anonymous memory file of this process, on no file system, closed at once."""
        fd = os.memfd_create("tentacle-identity", os.MFD_CLOEXEC)
        try:
            os.write(fd, self.key_pem + self.cert_pem)
            context.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)


def thumbprint_of_der(der: bytes) -> str:
    """What Octopus calls a thumbprint (the rule of octoboot.certificates.thumbprint_of_der,
    which the stand-in cannot import without cryptography; a unit test holds them equal)."""
    return _sha1.sha1(der).hexdigest().upper()


def open_plain(data: bytes) -> Identity | None:
    """The identity in a PFX without a password, or None when only cryptography can tell."""
    opened = _openssl(["pkcs12", "-nodes", "-passin", "pass:"], data)
    if opened is None:
        return None
    blocks = [(m.group(1), m.group(0)) for m in _PEM.finditer(opened)]
    keys = [pem for label, pem in blocks if label == b"PRIVATE KEY"]
    certs = [pem for label, pem in blocks if label == b"CERTIFICATE"]
    if len(keys) != 1 or len(certs) != 1 or len(blocks) != 2:
        return None
    return Identity(data, keys[0], certs[0])


def _openssl(arguments: list[str], stdin: bytes) -> bytes | None:
    """What `openssl arguments` prints for stdin, or None if it refuses it."""
    try:
        done = subprocess.run(["openssl", *arguments], input=stdin, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None
