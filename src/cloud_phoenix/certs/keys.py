"""RSA keys and the self-signed certificates built on them.

A spare key is made ahead, in the key maker's child process (certs/keymaker.py), together with a
certificate for the default parameters, so a `/generatecert` that finds a spare in the pool
(certs/pool.py) answers with bytes already made. A key is handed out once, lives only in
memory (and in the pipe from the key maker), and is never logged.

This module imports no web framework: the key maker's child loads it alone.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KEY_SIZE = 2048
DNS_NAME_PATTERN = (
    r"^(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
)


DEFAULT_CN = "localhost"
DEFAULT_DAYS = 365
# A spare's ready-made certificate is used only if it was signed this recently: its validity
# starts when it was signed, and a client expects it to start about when it asked.
READY_MAX_AGE = 60.0


def generate_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=KEY_SIZE)


@dataclass(frozen=True, slots=True)
class SpareKey:
    """A key made ahead, with a certificate for the default parameters already signed."""

    key_der: bytes  # the private key, PKCS#8 DER
    ready: IssuedCertificate
    made: float  # time.monotonic() when received from the maker, just after signing
    ready_json: bytes = b""  # `ready` as the /generatecert body, serialised by the maker

    @classmethod
    def from_parts(cls, key_der: bytes, ready_json: bytes, made: float) -> SpareKey:
        """A spare from what the key maker sends: the key and the ready certificate's body."""
        return cls(key_der, IssuedCertificate(**orjson.loads(ready_json)), made, ready_json)

    def private_key(self) -> rsa.RSAPrivateKey:
        # Made by our own key maker a moment ago: its consistency checks (about a
        # millisecond of big-number arithmetic) would only repeat what OpenSSL just did.
        key = serialization.load_der_private_key(
            self.key_der, password=None, unsafe_skip_rsa_key_validation=True
        )
        if not isinstance(key, rsa.RSAPrivateKey):
            raise TypeError(f"a spare key must be RSA, not {type(key).__name__}")
        return key

    def fresh(self, now: float) -> bool:
        return now - self.made <= READY_MAX_AGE

    def certificate(self, common_name: str, days: int, now: float) -> IssuedCertificate | None:
        """The ready-made certificate, if it is the one asked for and still fresh."""
        wanted = common_name == DEFAULT_CN and days == DEFAULT_DAYS
        return self.ready if wanted and self.fresh(now) else None


def make_spare_parts() -> tuple[bytes, bytes]:
    """A new key (PKCS#8 DER) and the JSON body of its default certificate: what the key
    maker's child sends for one spare (SpareKey.from_parts makes the spare of it)."""
    key = generate_key()
    ready = issue_certificate(key, DEFAULT_CN, DEFAULT_DAYS)
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return der, orjson.dumps(asdict(ready))


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A private key and its self-signed certificate, as handed to the client."""

    key: str
    cert: str
    fingerprint_sha256: str
    not_before: str
    not_after: str
    subject: str


def issue_certificate(
    key: rsa.RSAPrivateKey, common_name: str, days: int, now: datetime | None = None
) -> IssuedCertificate:
    """A self-signed X.509 certificate for `key`, valid `days` days for `common_name`."""
    start = (now or datetime.now(UTC)).replace(microsecond=0)
    end = start + timedelta(days=days)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=True,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    fingerprint = cert.fingerprint(hashes.SHA256()).hex(":").upper()
    return IssuedCertificate(
        key=key_pem,
        cert=cert.public_bytes(serialization.Encoding.PEM).decode(),
        fingerprint_sha256=fingerprint,
        not_before=start.isoformat().replace("+00:00", "Z"),
        not_after=end.isoformat().replace("+00:00", "Z"),
        subject=cert.subject.rfc4514_string(),
    )
