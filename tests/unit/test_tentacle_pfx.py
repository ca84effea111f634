"""The Tentacle stand-in's light PFX reader: it opens what cryptography opens without a
password, the same key and certificate, and refuses (None: cryptography decides) the rest."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from octoboot import certificates
from octoboot.sandbox.tentacle_standin import crypto, pfx


@pytest.fixture(scope="module")
def pair() -> tuple:
    return certificates.new_self_signed()


def test_a_plain_pfx_gives_cryptographys_key_and_certificate(pair: tuple) -> None:
    key, cert = pair
    found = pfx.open_plain(certificates.to_pfx(key, cert, None, name="web01"))
    assert found is not None
    assert found.thumbprint == certificates.thumbprint(cert)
    assert found.key_bits == key.key_size == 2048
    assert found.pem() == certificates.to_pem(key, cert)


def test_thumbprints_follow_octoboots_rule(pair: tuple) -> None:
    der = pair[1].public_bytes(serialization.Encoding.DER)
    assert pfx.thumbprint_of_der(der) == certificates.thumbprint_of_der(der)


def test_an_encrypted_pfx_is_left_to_cryptography(pair: tuple) -> None:
    assert pfx.open_plain(certificates.to_pfx(*pair, "a-password")) is None


@pytest.mark.parametrize("cut", ["truncated", "tampered", "empty", "not a pfx"])
def test_a_damaged_pfx_is_refused(pair: tuple, cut: str) -> None:
    data = bytearray(certificates.to_pfx(*pair, None))
    if cut == "truncated":
        data = data[:-40]
    elif cut == "tampered":
        data[len(data) // 2] ^= 1  # the MAC no longer verifies
    elif cut == "empty":
        data = bytearray()
    else:
        data = bytearray(b"-----BEGIN CERTIFICATE-----\n")
    assert pfx.open_plain(bytes(data)) is None
    with pytest.raises(certificates.CertificateError):
        crypto.open_pfx(bytes(data), None)  # and cryptography says why


def test_openssls_plain_pfx_with_an_empty_password_mac(tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=t",
         "-keyout", key, "-out", cert],
        check=True, capture_output=True,
    )  # fmt: skip
    out = tmp_path / "plain.pfx"
    subprocess.run(
        ["openssl", "pkcs12", "-export", "-in", cert, "-inkey", key, "-passout", "pass:",
         "-keypbe", "NONE", "-certpbe", "NONE", "-macalg", "sha1", "-out", out],
        check=True, capture_output=True,
    )  # fmt: skip
    data = out.read_bytes()
    found = pfx.open_plain(data)
    assert found is not None
    assert found.thumbprint == certificates.thumbprint(certificates.load_pfx(data, None)[1])


def test_the_configuration_keeps_an_imported_plain_pfx_as_it_came(pair: tuple) -> None:
    data = certificates.to_pfx(*pair, None, name="web01")
    assert crypto.open_pfx(data, None).pfx == data
    # with a password, cryptography opens it and the stand-in keeps a plain one
    kept = crypto.open_pfx(certificates.to_pfx(*pair, "a-password"), "a-password")
    assert pfx.open_plain(kept.pfx) is not None
    assert kept.thumbprint == certificates.thumbprint(pair[1])


def test_an_ssl_context_gets_the_identity_from_memory(pair: tuple) -> None:
    found = pfx.open_plain(certificates.to_pfx(*pair, None))
    assert found is not None
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    found.load_into(server)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
    left, right = socket.socketpair()
    with left, right:
        serving = threading.Thread(
            target=lambda: server.wrap_socket(right, server_side=True).close()
        )
        serving.start()
        with client.wrap_socket(left) as tls:
            presented = tls.getpeercert(binary_form=True)
        serving.join()
    assert presented == found.cert_der
