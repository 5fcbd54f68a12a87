"""The cluster CA: the root every TLS endpoint of a qbox cluster is checked against.

The first replica to start makes it (an EC P-256 key, a ten-year certificate) and keeps
key and certificate in the ``cluster_keys`` table, so every replica on the database signs
with the same one; replicas starting together race on the rows' primary key and the
losers read the winner's. It signs each joined host's listener certificate (from the
certificate request in its join) and each replica's own HTTPS certificate
(``QBOX_TLS=auto``). The key never leaves the database and this module; the certificate
is public (``GET /v1/cluster/ca``). docs/operations.md, "TLS between hosts and control
plane", says how hosts trust it and how to rotate.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from qbox.core.cert_fingerprint import fingerprint
from qbox.core.errors import ValidationError
from qbox.core.timefmt import utcnow
from qbox.server.db.tables import ClusterKey
from qbox.server.services.context import ServiceContext

CA_KEY_ROW = "ca_key"
CA_CERT_ROW = "ca_cert"
_CACHE = "cluster_ca"
CA_COMMON_NAME = "qbox cluster CA"
REPLICA_COMMON_NAME = "qbox control plane"
CA_VALIDITY = timedelta(days=3650)
LEAF_VALIDITY = timedelta(days=365)
# A host whose clock lags a little still accepts a certificate issued just now.
BACKDATE = timedelta(minutes=5)
# More names than any real host has; a request asking for more is refused, not trimmed.
MAX_NAMES = 16
# A DNS name of letters, digits and inner hyphens, dot-separated: no wildcard, no
# trailing dot, nothing a name constraint or a browser could read another way.
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")

AnyName = x509.DNSName | x509.IPAddress


@dataclass(frozen=True)
class ClusterCa:
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    cert_pem: str

    @property
    def fingerprint(self) -> str:
        """``sha256:<hex>`` of the certificate: what a joining agent's ``--ca-hash`` pins."""
        return fingerprint(self.cert_pem)


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def new_ca(now: datetime | None = None) -> ClusterCa:
    """A fresh CA (not stored): what ``stored_ca`` inserts when the database has none."""
    now = now or utcnow()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE).not_valid_after(now + CA_VALIDITY)
        # It signs host and replica certificates only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return ClusterCa(key=key, certificate=certificate, cert_pem=_pem(certificate))


def _from_rows(key_pem: str, cert_pem: str) -> ClusterCa:
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("the cluster CA's key in cluster_keys is not an EC key")
    return ClusterCa(key=key, certificate=x509.load_pem_x509_certificate(cert_pem.encode()),
                     cert_pem=cert_pem)


async def _load(sessions: async_sessionmaker[AsyncSession]) -> ClusterCa | None:
    async with sessions() as session:
        rows = await session.execute(select(ClusterKey.name, ClusterKey.value)
                                     .where(ClusterKey.name.in_((CA_KEY_ROW, CA_CERT_ROW))))
        values = {name: value for name, value in rows.all()}
    if CA_KEY_ROW not in values or CA_CERT_ROW not in values:
        return None
    return _from_rows(values[CA_KEY_ROW], values[CA_CERT_ROW])


async def stored_ca(sessions: async_sessionmaker[AsyncSession]) -> ClusterCa:
    """The cluster's CA from the database, made and stored by whichever replica asks first."""
    found = await _load(sessions)
    if found is not None:
        return found
    made = new_ca()
    try:
        # Both rows in one transaction: a reader never sees a key without its certificate.
        async with sessions() as session:
            session.add_all([ClusterKey(name=CA_KEY_ROW, value=_key_pem(made.key)),
                             ClusterKey(name=CA_CERT_ROW, value=made.cert_pem)])
            await session.commit()
    except IntegrityError:
        pass  # another replica stored its CA first: that one is the cluster's
    stored = await _load(sessions)
    if stored is None:
        raise RuntimeError("the cluster CA could neither be stored nor read back")
    return stored


async def ensure_ca(ctx: ServiceContext) -> ClusterCa:
    """The cluster CA this replica signs and checks with: read (or made) once, then kept.
    Replacing it means restarting the replicas (docs/operations.md, rotating the CA)."""
    found = ctx.extras.get(_CACHE)
    if isinstance(found, ClusterCa):
        return found
    ca = await stored_ca(ctx.sessions)
    ctx.extras[_CACHE] = ca
    return ca


def plain_name(text: str) -> AnyName | None:
    """``text`` as a certificate name if it is a plain DNS name, or an IP address that is
    neither unspecified (0.0.0.0, ::) nor multicast."""
    text = text.strip()
    try:
        address = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        name = text.lower()
        labels = name.split(".")
        if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
            return None
        return x509.DNSName(name)
    if address.is_unspecified or address.is_multicast:
        return None
    return x509.IPAddress(address)


def parse_names(texts: Iterable[str]) -> list[AnyName]:
    """Names for a certificate (``QBOX_TLS_NAMES``); ValueError names the first that is not one."""
    names: list[AnyName] = []
    for text in texts:
        name = plain_name(text)
        if name is None:
            raise ValueError(f"not a plain DNS name or IP address: {text!r}")
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError("a certificate needs at least one DNS name or IP address")
    return names


def _requested_names(request: x509.CertificateSigningRequest) -> list[AnyName]:
    """The plain DNS names and IP addresses a request asks for; anything else (wildcards,
    URIs, e-mail addresses, other name forms) is dropped."""
    try:
        wanted = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    names: list[AnyName] = []
    candidates = [*wanted.get_values_for_type(x509.DNSName),
                  *(str(ip) for ip in wanted.get_values_for_type(x509.IPAddress))]
    for text in candidates:
        name = plain_name(text)
        if name is not None and name not in names:
            names.append(name)
    return names


def _check_key(key: object) -> None:
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size >= 256:
        return
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048:
        return
    if isinstance(key, ed25519.Ed25519PublicKey):
        return
    raise ValidationError.for_fields({"csrPem": "the key must be EC (P-256 or larger), RSA (2048 bits "
                                                "or more) or Ed25519"})


def _leaf(ca: ClusterCa, public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey,
          common_name: str, names: list[AnyName], now: datetime) -> str:
    """A certificate for a TLS endpoint that serves and dials (server and client auth)."""
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.certificate.subject).public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE).not_valid_after(now + LEAF_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True,
                                     key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
                                     content_commitment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
                       critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return _pem(certificate)


def sign_csr(ca: ClusterCa, csr_pem: str, host_id: str, now: datetime | None = None) -> str:
    """The PEM certificate for a joining host's listener: its CN is ``host_id``, its names
    those of the request that are plain DNS names or IP addresses. A request that is not
    one, is not signed by its own key, uses a weak key, or names nothing usable is a
    ValidationError on ``csrPem`` (the join is refused)."""
    try:
        request = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError:
        raise ValidationError.for_fields({"csrPem": "not a PEM certificate request"}) from None
    if not request.is_signature_valid:
        raise ValidationError.for_fields({"csrPem": "the request is not signed by its own key"})
    public_key = request.public_key()
    _check_key(public_key)
    assert isinstance(public_key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey, ed25519.Ed25519PublicKey))
    names = _requested_names(request)
    if not names:
        raise ValidationError.for_fields({"csrPem": "the request names no plain DNS name or IP address "
                                                    "the host is reached at"})
    if len(names) > MAX_NAMES:
        raise ValidationError.for_fields({"csrPem": f"the request names more than {MAX_NAMES} addresses"})
    return _leaf(ca, public_key, host_id, names, now or utcnow())


def issue_server_cert(ca: ClusterCa, names: Iterable[str],
                      now: datetime | None = None) -> tuple[str, str]:
    """(key PEM, certificate PEM) for a replica's own HTTPS listener, a fresh key each time.
    ValueError for a name that is not a plain DNS name or IP address."""
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = _leaf(ca, key.public_key(), REPLICA_COMMON_NAME, parse_names(names), now or utcnow())
    return _key_pem(key), certificate


