"""The cluster CA: one per database whichever replicas race to make it; what it signs for a
joining host (only plain names, a year, server and client use) and for a replica."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import event, func, select

from qbox.core.cert_fingerprint import fingerprint, parse_fingerprint
from qbox.core.errors import ValidationError
from qbox.server.db.engine import make_async_engine, make_sessionmaker, migrate
from qbox.server.db.tables import ClusterKey
from qbox.server.services.cluster_ca import (
    CA_COMMON_NAME,
    ClusterCa,
    ensure_ca,
    issue_server_cert,
    new_ca,
    sign_csr,
    stored_ca,
)
from qbox.server.services.context import AgentPool, ServiceContext
from qbox.server.settings import ServerSettings


def request_for(*names: x509.GeneralName, key: Any = None) -> str:
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "asks to be anything")]))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def names_of(cert_pem: str) -> list[str]:
    certificate = x509.load_pem_x509_certificate(cert_pem.encode())
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [*san.get_values_for_type(x509.DNSName), *map(str, san.get_values_for_type(x509.IPAddress))]


@pytest.fixture(scope="module")
def ca() -> ClusterCa:
    return new_ca()


def test_a_host_certificate_is_signed_by_the_ca_for_the_host_and_its_names(ca: ClusterCa) -> None:
    csr = request_for(x509.DNSName("agent-1.example.com"), x509.IPAddress(ipaddress.ip_address("10.1.2.3")))
    certificate = x509.load_pem_x509_certificate(sign_csr(ca, csr, "host_abc").encode())

    certificate.verify_directly_issued_by(ca.certificate)
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "host_abc"
    assert names_of(certificate.public_bytes(serialization.Encoding.PEM).decode()) == [
        "agent-1.example.com", "10.1.2.3"]
    usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert timedelta(days=365) <= lifetime <= timedelta(days=366)


def test_the_ca_is_a_ten_year_ca_named_for_qbox(ca: ClusterCa) -> None:
    certificate = ca.certificate
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == CA_COMMON_NAME
    assert certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert certificate.not_valid_after_utc - certificate.not_valid_before_utc >= timedelta(days=3650)


def test_odd_names_in_a_request_are_dropped(ca: ClusterCa) -> None:
    csr = request_for(
        x509.DNSName("*.example.com"), x509.DNSName("agent-2.example.com"), x509.DNSName("bad_name"),
        x509.DNSName("-lead.example.com"), x509.DNSName("trailing.example.com."),
        x509.UniformResourceIdentifier("https://evil.example.com/"), x509.RFC822Name("root@example.com"),
        x509.IPAddress(ipaddress.ip_address("0.0.0.0")), x509.IPAddress(ipaddress.ip_address("224.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("fd00::5")), x509.DNSName("Agent-2.Example.com"))
    assert names_of(sign_csr(ca, csr, "host_x")) == ["agent-2.example.com", "fd00::5"]


@pytest.mark.parametrize("csr", [
    pytest.param(lambda: request_for(x509.DNSName("*.example.com")), id="only-a-wildcard"),
    pytest.param(lambda: request_for(), id="no-names"),
    pytest.param(lambda: request_for(*(x509.DNSName(f"h{i}.example.com") for i in range(17))), id="17-names"),
    pytest.param(lambda: request_for(x509.DNSName("ok.example.com"),
                                     key=rsa.generate_private_key(65537, 1024)), id="rsa-1024"),
    pytest.param(lambda: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
                 id="garbage"),
    pytest.param(lambda: tampered(request_for(x509.DNSName("ok.example.com"))), id="bad-signature"),
])
def test_a_request_that_cannot_be_signed_is_refused(ca: ClusterCa, csr: Any) -> None:
    with pytest.raises(ValidationError) as refused:
        sign_csr(ca, csr(), "host_x")
    assert "csrPem" in refused.value.field_errors


def tampered(csr_pem: str) -> str:
    """The request with one bit of its signature flipped (still well-formed)."""
    request = x509.load_pem_x509_csr(csr_pem.encode())
    der = bytearray(request.public_bytes(serialization.Encoding.DER))
    where = bytes(der).rindex(request.signature) + len(request.signature) - 1
    der[where] ^= 0x01
    return x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()


def test_a_replica_certificate_has_a_fresh_key_and_refuses_odd_names(ca: ClusterCa) -> None:
    key_pem, cert_pem = issue_server_cert(ca, ["cp.example.com", "127.0.0.1"])
    certificate = x509.load_pem_x509_certificate(cert_pem.encode())
    certificate.verify_directly_issued_by(ca.certificate)
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    assert key.public_key() == certificate.public_key()
    assert names_of(cert_pem) == ["cp.example.com", "127.0.0.1"]
    with pytest.raises(ValueError, match=r"\*\.example\.com"):
        issue_server_cert(ca, ["*.example.com"])


def test_the_fingerprint_is_openssls_sha256_in_any_spelling(ca: ClusterCa) -> None:
    digest = hashlib.sha256(ca.certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
    assert ca.fingerprint == fingerprint(ca.cert_pem) == f"sha256:{digest}"
    openssl_style = ":".join(digest[i:i + 2] for i in range(0, 64, 2)).upper()
    assert parse_fingerprint(openssl_style) == parse_fingerprint(digest) == ca.fingerprint
    with pytest.raises(ValueError):
        parse_fingerprint("sha1:" + digest[:40])


# --- one CA per database -------------------------------------------------------------


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    migrate(url)
    return url


def test_replicas_making_the_ca_together_keep_one(database_url: str) -> None:
    """Two replicas, each on its own thread and loop, both find no CA and insert theirs: one
    insert wins, the other reads the winner's."""
    both_looked = threading.Barrier(2)
    found: dict[str, str | BaseException] = {}

    def replica(name: str) -> None:
        async def run() -> str:
            engine = make_async_engine(database_url)

            def hold(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
                if statement.lstrip().upper().startswith("INSERT INTO CLUSTER_KEYS"):
                    both_looked.wait(timeout=10)

            event.listen(engine.sync_engine, "before_cursor_execute", hold)
            try:
                return (await stored_ca(make_sessionmaker(engine))).fingerprint
            finally:
                await engine.dispose()
        try:
            found[name] = asyncio.run(run())
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            found[name] = error

    threads = [threading.Thread(target=replica, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert all(isinstance(value, str) for value in found.values()) and len(found) == 2, found
    assert found["a"] == found["b"]

    async def rows() -> int:
        engine = make_async_engine(database_url)
        try:
            async with make_sessionmaker(engine)() as session:
                return int(await session.scalar(select(func.count()).select_from(ClusterKey)) or 0)
        finally:
            await engine.dispose()
    assert asyncio.run(rows()) == 2  # ca_key and ca_cert, once


async def test_ensure_ca_keeps_the_stored_ca(tmp_path: Path, database_url: str) -> None:
    engine = make_async_engine(database_url)
    try:
        ctx = ServiceContext(settings=ServerSettings(data_dir=tmp_path, database_url=database_url),
                             sessions=make_sessionmaker(engine), agents=AgentPool())
        first = await ensure_ca(ctx)
        again = await stored_ca(make_sessionmaker(engine))
        assert again.fingerprint == first.fingerprint
        assert again.key.private_numbers() == first.key.private_numbers()
        assert (await ensure_ca(ctx)) is first
    finally:
        await engine.dispose()
