"""certificates.load_pfx: a Tentacle's certificate is RSA; anything else is one CertificateError."""

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from octoboot import certificates


def test_an_rsa_pfx_opens_with_its_password():
    key, cert = certificates.new_self_signed()
    data = certificates.to_pfx(key, cert, "secret")
    opened_key, opened_cert = certificates.load_pfx(data, "secret")
    assert certificates.thumbprint(opened_cert) == certificates.thumbprint(cert)
    assert opened_key.key_size == 2048


def test_a_pfx_whose_key_is_not_rsa_is_refused():
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not a tentacle")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    data = pkcs12.serialize_key_and_certificates(
        b"ec", key, cert, None, serialization.NoEncryption()
    )
    with pytest.raises(certificates.CertificateError, match="not an RSA key"):
        certificates.load_pfx(data, None)
