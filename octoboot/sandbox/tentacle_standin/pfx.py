"""A PFX without a password, opened with the standard library alone.

Importing cryptography costs a Tentacle command more than all the rest of it, and the
PFX files the stand-in meets on a bootstrap are plain: the one octoboot imports, and the
one the instance's configuration keeps. `open_plain` reads such a PFX only when it is
exactly what it vouches for: every bag unencrypted, one RSA private key and one
certificate with the same local key id and the same modulus, and a MAC (if any) that
verifies with no password the way OpenSSL's PKCS12_parse tries it (an absent password,
then an empty one). Anything else, malformed or encrypted, gives None and the caller asks
cryptography, whose answer (or error) stays the stand-in's. RFC 7292 (PKCS #12), RFC 5208
(PrivateKeyInfo), RFC 8017 (RSAPrivateKey).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ssl

_SEQUENCE, _SET, _INTEGER, _OCTETS, _BITS, _OID = 0x30, 0x31, 0x02, 0x04, 0x03, 0x06
_EXPLICIT_0 = 0xA0


def _oid(dotted: str) -> bytes:
    """The content octets of an OBJECT IDENTIFIER."""
    first, second, *rest = (int(part) for part in dotted.split("."))
    out = bytearray([first * 40 + second])
    for number in rest:
        chunk = [number & 0x7F]
        while number := number >> 7:
            chunk.append(0x80 | (number & 0x7F))
        out += bytes(reversed(chunk))
    return bytes(out)


_DATA = _oid("1.2.840.113549.1.7.1")
_KEY_BAG = _oid("1.2.840.113549.1.12.10.1.1")
_CERT_BAG = _oid("1.2.840.113549.1.12.10.1.3")
_X509_CERTIFICATE = _oid("1.2.840.113549.1.9.22.1")
_LOCAL_KEY_ID = _oid("1.2.840.113549.1.9.21")
_RSA = _oid("1.2.840.113549.1.1.1")
# MAC digests: (hashlib name, the PKCS #12 KDF's block size v in bytes).
_DIGESTS = {
    _oid("1.3.14.3.2.26"): ("sha1", 64),
    _oid("2.16.840.1.101.3.4.2.1"): ("sha256", 64),
    _oid("2.16.840.1.101.3.4.2.2"): ("sha384", 128),
    _oid("2.16.840.1.101.3.4.2.3"): ("sha512", 128),
}
_MAC_KEY_ID = 3  # RFC 7292 B.3: the KDF's ID for MAC keys


class _Refused(Exception):
    """Not a PFX this reader vouches for."""


# An element: (tag, content start, content end, where it starts: its tag).
_Element = tuple[int, int, int, int]


def _tlv(data: bytes, pos: int) -> _Element:
    """The DER element at pos."""
    if pos + 2 > len(data):
        raise _Refused
    tag, first = data[pos], data[pos + 1]
    start = pos + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if not 1 <= count <= 4 or start + count > len(data):
            raise _Refused  # indefinite length (BER) or absurd
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    if start + length > len(data):
        raise _Refused
    return tag, start, start + length, pos


def _children(data: bytes, element: _Element, tag: int) -> list[_Element]:
    """The elements inside element, which must have the given tag."""
    _expect(element, tag)
    found, pos, end = [], element[1], element[2]
    while pos < end:
        element = _tlv(data, pos)
        found.append(element)
        pos = element[2]
    if pos != end:
        raise _Refused
    return found


def _expect(element: _Element, tag: int) -> _Element:
    if element[0] != tag:
        raise _Refused
    return element


def _content(data: bytes, element: _Element, tag: int) -> bytes:
    _expect(element, tag)
    return data[element[1] : element[2]]


def _whole(data: bytes, element: _Element) -> bytes:
    """The element's DER, tag and length included."""
    return data[element[3] : element[2]]


def _explicit_octets(data: bytes, element: _Element) -> bytes:
    """The OCTET STRING inside a [0] EXPLICIT."""
    (inner,) = _children(data, element, _EXPLICIT_0)
    return _content(data, inner, _OCTETS)


def _integer(data: bytes, element: _Element) -> int:
    return int.from_bytes(_content(data, element, _INTEGER), "big", signed=True)


def _pkcs12_mac_key(name: str, block: int, password: bytes, salt: bytes, rounds: int) -> bytes:
    """RFC 7292 B.2 for one hash's worth of key, which is all a MAC key needs."""

    def fill(value: bytes) -> bytes:
        """value repeated to the next multiple of the block size (RFC 7292 B.2 steps 2-3)."""
        size = -(-len(value) // block) * block
        return (value * (size // len(value) + 1))[:size] if value else b""

    digest = hashlib.new(name, bytes([_MAC_KEY_ID]) * block + fill(salt) + fill(password)).digest()
    for _ in range(rounds - 1):
        digest = hashlib.new(name, digest).digest()
    return digest


class Identity:
    """A certificate and its RSA private key, as DER, and the PFX they came from."""

    def __init__(self, pfx: bytes, key_der: bytes, cert_der: bytes, key_bits: int) -> None:
        self.pfx, self.key_der, self.cert_der, self.key_bits = pfx, key_der, cert_der, key_bits

    @property
    def thumbprint(self) -> str:
        return thumbprint_of_der(self.cert_der)

    def pem(self) -> tuple[bytes, bytes]:
        """(PKCS #8 key PEM, certificate PEM)."""
        return _pem("PRIVATE KEY", self.key_der), _pem("CERTIFICATE", self.cert_der)

    def load_into(self, context: ssl.SSLContext) -> None:
        """Give context this certificate and key. load_cert_chain reads files only: the key
        goes into an anonymous memory file of this process, on no file system, closed at once."""
        fd = os.memfd_create("tentacle-identity", os.MFD_CLOEXEC)
        try:
            os.write(fd, b"".join(self.pem()))
            context.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)


def thumbprint_of_der(der: bytes) -> str:
    """What Octopus calls a thumbprint (the rule of octoboot.certificates.thumbprint_of_der,
    which the stand-in cannot import without cryptography; a unit test holds them equal)."""
    return hashlib.sha1(der).hexdigest().upper()


def _pem(label: str, der: bytes) -> bytes:
    text = base64.b64encode(der).decode()
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----", ""]).encode()


def open_plain(data: bytes) -> Identity | None:
    """The identity in a PFX without a password, or None when only cryptography can tell."""
    try:
        return _open(data)
    except (_Refused, ValueError):  # ValueError: an element without the fields it needs
        return None


def _open(data: bytes) -> Identity:
    pfx = _tlv(data, 0)
    if pfx[2] != len(data):
        raise _Refused
    version, auth_safe, *mac = _children(data, pfx, _SEQUENCE)
    if _integer(data, version) != 3 or len(mac) > 1:
        raise _Refused
    content_type, explicit = _children(data, auth_safe, _SEQUENCE)
    if _content(data, content_type, _OID) != _DATA:
        raise _Refused
    safes = _explicit_octets(data, explicit)
    if mac and not _mac_verifies(data, mac[0], safes):
        raise _Refused
    keys: list[tuple[bytes, bytes]] = []  # (local key id, PrivateKeyInfo DER)
    certs: list[tuple[bytes, bytes]] = []  # (local key id, certificate DER)
    for info in _children(safes, _tlv(safes, 0), _SEQUENCE):
        kind, inner = _children(safes, info, _SEQUENCE)
        if _content(safes, kind, _OID) != _DATA:
            raise _Refused  # encryptedData: the bags need a password
        bags = _explicit_octets(safes, inner)
        for bag in _children(bags, _tlv(bags, 0), _SEQUENCE):
            bag_id, value, *attributes = _children(bags, bag, _SEQUENCE)
            if len(attributes) != 1:
                raise _Refused
            key_id = _local_key_id(bags, attributes[0])
            bag_type = _content(bags, bag_id, _OID)
            (bag_value,) = _children(bags, value, _EXPLICIT_0)
            if bag_type == _KEY_BAG:
                keys.append((key_id, _whole(bags, bag_value)))
            elif bag_type == _CERT_BAG:
                cert_type, cert = _children(bags, bag_value, _SEQUENCE)
                if _content(bags, cert_type, _OID) != _X509_CERTIFICATE:
                    raise _Refused
                certs.append((key_id, _explicit_octets(bags, cert)))
            else:
                raise _Refused  # a shrouded key, a CRL, a secret: cryptography's business
    if len(keys) != 1 or len(certs) != 1 or keys[0][0] != certs[0][0]:
        raise _Refused
    key_der, cert_der = keys[0][1], certs[0][1]
    modulus = _private_modulus(key_der)
    if modulus <= 0 or _certificate_modulus(cert_der) != modulus:
        raise _Refused
    return Identity(data, key_der, cert_der, modulus.bit_length())


def _mac_verifies(data: bytes, mac_data: _Element, safes: bytes) -> bool:
    digest_info, salt, *rounds = _children(data, mac_data, _SEQUENCE)
    algorithm, expected = _children(data, digest_info, _SEQUENCE)
    digest_oid = _content(data, _children(data, algorithm, _SEQUENCE)[0], _OID)
    if digest_oid not in _DIGESTS or len(rounds) > 1:
        raise _Refused
    name, block = _DIGESTS[digest_oid]
    count = _integer(data, rounds[0]) if rounds else 1
    if not 1 <= count <= 10_000_000:
        raise _Refused
    salt_bytes, wanted = _content(data, salt, _OCTETS), _content(data, expected, _OCTETS)
    for password in (b"", b"\0\0"):  # none, then "" as a BMPString with its terminator
        key = _pkcs12_mac_key(name, block, password, salt_bytes, count)
        if hmac.compare_digest(hmac.new(key, safes, name).digest(), wanted):
            return True
    return False


def _local_key_id(data: bytes, attributes: _Element) -> bytes:
    """The bag's localKeyId attribute (the one attribute that ties a key to its certificate;
    a friendly name may come with it)."""
    for attribute in _children(data, attributes, _SET):
        attribute_type, values = _children(data, attribute, _SEQUENCE)
        if _content(data, attribute_type, _OID) == _LOCAL_KEY_ID:
            (value,) = _children(data, values, _SET)
            return _content(data, value, _OCTETS)
    raise _Refused


def _private_modulus(key_der: bytes) -> int:
    """n of the RSA key in a PrivateKeyInfo; refused if it is not RSA."""
    version, algorithm, private, *_ = _children(key_der, _tlv(key_der, 0), _SEQUENCE)
    if _integer(key_der, version) != 0:
        raise _Refused
    if _content(key_der, _children(key_der, algorithm, _SEQUENCE)[0], _OID) != _RSA:
        raise _Refused
    rsa = _content(key_der, private, _OCTETS)
    return _integer(rsa, _children(rsa, _tlv(rsa, 0), _SEQUENCE)[1])


def _certificate_modulus(cert_der: bytes) -> int:
    """n of the RSA public key in a certificate's subjectPublicKeyInfo."""
    tbs = _children(cert_der, _tlv(cert_der, 0), _SEQUENCE)[0]
    fields = _children(cert_der, tbs, _SEQUENCE)
    if fields[0][0] == _EXPLICIT_0:  # [0] version
        fields = fields[1:]
    algorithm, public = _children(cert_der, fields[5], _SEQUENCE)  # serial ... subject, spki
    if _content(cert_der, _children(cert_der, algorithm, _SEQUENCE)[0], _OID) != _RSA:
        raise _Refused
    bits = _content(cert_der, public, _BITS)
    if bits[:1] != b"\0":
        raise _Refused
    rsa = bits[1:]
    return _integer(rsa, _children(rsa, _tlv(rsa, 0), _SEQUENCE)[0])
