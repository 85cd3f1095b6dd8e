"""Keys, certificates and spare keys: what a certificate request is answered with."""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cloud_phoenix.certs.keys import generate_key, issue_certificate
from tests.fixtures.certs import new_spare

KEY = generate_key()


def test_certificate_matches_its_key_and_request() -> None:
    now = datetime(2026, 11, 27, 12, 0, 0, 123, tzinfo=UTC)
    issued = issue_certificate(KEY, "example.org", 30, now=now)
    cert = x509.load_pem_x509_certificate(issued.cert.encode())
    key = serialization.load_pem_private_key(issued.key.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    public = cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.public_numbers() == key.public_key().public_numbers()
    assert issued.subject == "CN=example.org"
    assert issued.not_before == "2026-11-27T12:00:00Z"
    assert issued.not_after == "2026-12-27T12:00:00Z"
    assert issued.fingerprint_sha256 == cert.fingerprint(hashes.SHA256()).hex(":").upper()
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["example.org"]


def test_a_spare_comes_with_a_ready_certificate_for_the_defaults_only_while_fresh() -> None:
    spare = new_spare()
    assert spare.certificate("localhost", 365, spare.made + 1) is spare.ready
    assert spare.certificate("example.org", 365, spare.made + 1) is None
    assert spare.certificate("localhost", 30, spare.made + 1) is None
    assert spare.certificate("localhost", 365, spare.made + 3600) is None
    cert = x509.load_pem_x509_certificate(spare.ready.cert.encode())
    key = spare.private_key()
    public = cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.public_numbers() == key.public_key().public_numbers()
    handed_out = serialization.load_pem_private_key(spare.ready.key.encode(), password=None)
    assert isinstance(handed_out, rsa.RSAPrivateKey)
    assert handed_out.private_numbers() == key.private_numbers()  # the DER is that key
