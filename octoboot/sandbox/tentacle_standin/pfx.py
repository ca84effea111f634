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
import binascii
import os

from . import spawn

TYPE_CHECKING = False  # typing's import alone is a tenth of a short command's
if TYPE_CHECKING:
    import ssl

_BEGIN, _END, _DASHES = b"-----BEGIN ", b"\n-----END ", b"-----\n"
_LABEL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ ")


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
            bits = _key_bits(described or b"")
            if bits is None:
                from octoboot import certificates

                self._key_bits = certificates.load_pfx(self.pfx, None)[0].key_size
            else:
                self._key_bits = bits
        return self._key_bits

    @property
    def cert_der(self) -> bytes:
        return binascii.a2b_base64(b"".join(self.cert_pem.splitlines()[1:-1]))  # b64decode

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
    blocks = _pem_blocks(opened)
    keys = [pem for label, pem in blocks if label == b"PRIVATE KEY"]
    certs = [pem for label, pem in blocks if label == b"CERTIFICATE"]
    if len(keys) != 1 or len(certs) != 1 or len(blocks) != 2:
        return None
    return Identity(data, keys[0], certs[0])


def _pem_blocks(text: bytes) -> list[tuple[bytes, bytes]]:
    """(label, block) of every PEM block, as the regex
    rb"-----BEGIN ([A-Z ]+)-----\\n.*?\\n-----END \\1-----\\n" (DOTALL) finds them with
    finditer; written out, as re (with enum) cost a command a tenth of its CPU."""
    found = []
    at = text.find(_BEGIN)
    while at >= 0:
        label_at = at + len(_BEGIN)
        end_of_label = label_at
        while end_of_label < len(text) and text[end_of_label] in _LABEL:
            end_of_label += 1
        label = text[label_at:end_of_label]
        body_at = end_of_label + len(_DASHES)
        if label and text.startswith(_DASHES, end_of_label):
            closing = _END + label + _DASHES
            end = text.find(closing, body_at)
            if end >= 0:
                found.append((label, text[at : end + len(closing)]))
                at = text.find(_BEGIN, end + len(closing))
                continue
        at = text.find(_BEGIN, at + 1)
    return found


def _key_bits(described: bytes) -> int | None:
    """The number in the first "(<digits> bit" of openssl's description of a key."""
    at = described.find(b"(")
    while at >= 0:
        end = at + 1
        while end < len(described) and described[end] in b"0123456789":
            end += 1
        if end > at + 1 and described.startswith(b" bit", end):
            return int(described[at + 1 : end])
        at = described.find(b"(", at + 1)
    return None


def _openssl(arguments: list[str], stdin: bytes) -> bytes | None:
    """What `openssl arguments` prints for stdin, or None if it refuses it."""
    try:
        code, stdout, _ = spawn.run(["openssl", *arguments], stdin, timeout=30)
    except (OSError, spawn.TimeoutExpired):
        return None
    return stdout if code == 0 else None
