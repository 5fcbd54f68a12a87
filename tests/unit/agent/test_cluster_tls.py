"""A joining agent's TLS: which control plane it trusts (a CA file, or the cluster CA fetched
and checked against its pinned fingerprint, then kept), and its listener's key and request."""

from __future__ import annotations

import asyncio
import json
import ssl
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from qbox.agent.cluster_tls import (
    CONTROL_PLANE_CA,
    ListenerCert,
    TrustRefused,
    control_plane_trust,
    keep_certificate,
    listener_names,
    tls_dir,
)
from qbox.core.timefmt import utcnow
from qbox.server.services.cluster_ca import new_ca, sign_csr

URL = "https://cp.example.com:8443"


def serving_ca(ca_pem: str, seen: list[httpx.Request] | None = None) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        if request.url.path != "/v1/agent/ca":
            return httpx.Response(404)
        return httpx.Response(200, json={"certificatePem": ca_pem, "fingerprint": "whatever it says"})
    return httpx.MockTransport(handle)


def trusted_subjects(context: ssl.SSLContext) -> list[str]:
    return [dict(pair[0] for pair in cert["subject"]).get("commonName", "") for cert in context.get_ca_certs()]


async def test_a_pinned_ca_is_fetched_checked_and_kept(tmp_path: Path) -> None:
    ca = new_ca()
    seen: list[httpx.Request] = []
    context = await control_plane_trust(tmp_path, URL, ca_hash=ca.fingerprint,
                                        transport=serving_ca(ca.cert_pem, seen))
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert trusted_subjects(context) == ["qbox cluster CA"]
    assert [str(r.url) for r in seen] == [f"{URL}/v1/agent/ca"]
    kept = tls_dir(tmp_path) / CONTROL_PLANE_CA
    assert kept.read_text() == ca.cert_pem and kept.stat().st_mode & 0o077 == 0

    # A restart trusts what it kept, asking nothing, with or without the hash given again.
    for again in (ca.fingerprint, None):
        assert await control_plane_trust(tmp_path, URL, ca_hash=again,
                                         transport=serving_ca("unused", seen)) is not None
    assert len(seen) == 1


async def test_a_ca_with_another_fingerprint_is_refused(tmp_path: Path) -> None:
    pinned, impostor = new_ca(), new_ca()
    with pytest.raises(TrustRefused, match="not trusting it"):
        await control_plane_trust(tmp_path, URL, ca_hash=pinned.fingerprint,
                                  transport=serving_ca(impostor.cert_pem))
    assert not (tls_dir(tmp_path) / CONTROL_PLANE_CA).exists()
    # Nor is a kept CA the operator now pins another over.
    await control_plane_trust(tmp_path, URL, ca_hash=impostor.fingerprint,
                              transport=serving_ca(impostor.cert_pem))
    with pytest.raises(TrustRefused, match="remove it"):
        await control_plane_trust(tmp_path, URL, ca_hash=pinned.fingerprint)
    with pytest.raises(TrustRefused, match="not a sha256 fingerprint"):
        await control_plane_trust(tmp_path / "other", URL, ca_hash="sha1:abcd")


async def test_a_ca_file_or_the_systems_roots(tmp_path: Path) -> None:
    ca = new_ca()
    given = tmp_path / "given.pem"
    given.write_text(ca.cert_pem)
    context = await control_plane_trust(tmp_path / "a", URL, ca_cert=given)
    assert context is not None and trusted_subjects(context) == ["qbox cluster CA"]
    with pytest.raises(TrustRefused):
        await control_plane_trust(tmp_path / "b", URL, ca_cert=given, ca_hash=new_ca().fingerprint)

    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    for pinned in (None, ca.fingerprint):
        with pytest.raises(TrustRefused):
            await control_plane_trust(tmp_path / "e", URL, ca_cert=garbage, ca_hash=pinned)

    system = await control_plane_trust(tmp_path / "c", URL)
    assert system is not None and "qbox cluster CA" not in trusted_subjects(system)
    assert await control_plane_trust(tmp_path / "d", "http://cp.example.com:8080", ca_cert=given) is None


def test_the_listener_serves_a_stand_in_until_the_joins_certificate(tmp_path: Path) -> None:
    listener = ListenerCert(tmp_path, ["10.0.0.21", "agent-1.example.com"])
    listener.context()
    assert not listener.signed and listener.key_file.stat().st_mode & 0o077 == 0

    ca = new_ca()
    request = x509.load_pem_x509_csr(listener.request().encode())
    san = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.21"]
    assert san.get_values_for_type(x509.DNSName) == ["agent-1.example.com"]
    key = serialization.load_pem_private_key(listener.key_file.read_bytes(), password=None)
    assert request.public_key() == key.public_key()  # the key it serves with, kept

    listener.install(sign_csr(ca, listener.request(), "host_1"), ca.cert_pem)
    assert listener.signed
    assert ListenerCert(tmp_path, ["10.0.0.21"]).signed  # a restart finds it


@pytest.mark.parametrize(("advertise", "listen", "names"), [
    ("https://10.0.0.21:7070", "10.0.0.21:7070", ["10.0.0.21"]),
    ("https://agent-1.example.com:7070", "0.0.0.0:7070", ["agent-1.example.com"]),
    ("https://[fd00::5]:7070", "[fd00::6]:7070", ["fd00::5", "fd00::6"]),
])
def test_the_listeners_names(advertise: str, listen: str, names: list[str]) -> None:
    assert listener_names(advertise, listen) == names


async def test_a_certificate_near_its_end_is_renewed_with_the_host_credential(tmp_path: Path) -> None:
    ca = new_ca()
    listener = ListenerCert(tmp_path, ["10.0.0.21"])
    listener.context()
    assert listener.due()  # the stand-in
    listener.install(sign_csr(ca, listener.request(), "host_1", now=utcnow() - timedelta(days=340)), ca.cert_pem)
    assert listener.signed and listener.due()  # 25 days left

    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:
            return httpx.Response(503)  # not answered: asked again soon
        csr = json.loads(request.content)["csrPem"]
        return httpx.Response(200, json={"certificatePem": sign_csr(ca, csr, "host_1"), "caCertPem": ca.cert_pem})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
        keeping = asyncio.create_task(keep_certificate(client, URL, "qbh_credential", listener,
                                                       check_seconds=3600, retry_seconds=0.01))
        try:
            for _ in range(500):
                if not listener.due():
                    break
                await asyncio.sleep(0.01)
        finally:
            keeping.cancel()
    assert not listener.due()
    assert [(str(r.url), r.headers["authorization"]) for r in seen] == [
        (f"{URL}/v1/agent/certificate", "Bearer qbh_credential")] * 2


def test_a_lost_key_takes_its_certificate_with_it(tmp_path: Path) -> None:
    ca = new_ca()
    listener = ListenerCert(tmp_path, ["10.0.0.21"])
    listener.install(sign_csr(ca, listener.request(), "host_1"), ca.cert_pem)
    listener.key_file.unlink()
    again = ListenerCert(tmp_path, ["10.0.0.21"])
    again.context()  # a new key and a stand-in for it, not the old key's certificate
    assert again.due() and not again.signed
