"""POST /v1/agent/certificate: a joined host gets a new listener certificate for its own id
with its host credential; no credential, a revoked one, or a request the CA refuses gets none."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.unit.server.conftest import Harness, make_harness
from tests.unit.server.test_audit import entries
from tests.unit.server.test_cluster_ca import request_for
from tests.unit.server.test_hosts_api import join, new_token

CSR = request_for(x509.IPAddress(ipaddress.ip_address("10.9.0.2")))


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    yield from make_harness(tmp_path, database=None)


def ask(h: Harness, credential: str | None, csr: str = CSR) -> tuple[int, dict]:  # type: ignore[type-arg]
    headers = {"Authorization": f"Bearer {credential}"} if credential else {}
    answer = h.client.post("/v1/agent/certificate", json={"csrPem": csr}, headers=headers)
    return answer.status_code, answer.json()


def test_a_joined_host_gets_a_certificate_for_its_own_id(harness: Harness) -> None:
    joined = join(harness, new_token(harness)["token"]).json()
    status, reply = ask(harness, joined["credential"])
    assert status == 200, reply
    ca_pem = harness.client.get("/v1/agent/ca").json()["certificatePem"]
    assert reply["caCertPem"] == ca_pem
    certificate = x509.load_pem_x509_certificate(reply["certificatePem"].encode())
    certificate.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem.encode()))
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == joined["hostId"]
    (entry,) = entries(harness, action="host.certificate")
    assert (entry["targetId"], entry["outcome"]) == (joined["hostId"], 200)


def test_no_certificate_without_a_live_credential_or_for_a_bad_request(harness: Harness) -> None:
    joined = join(harness, new_token(harness)["token"]).json()
    assert ask(harness, joined["credential"], csr=request_for(x509.DNSName("*.example.com")))[0] == 400
    for credential in (None, "qbh_not-a-credential"):
        status, refused = ask(harness, credential)
        assert (status, refused["error"]["code"]) == (401, "invalid_host_credential")
    assert harness.client.delete(f"/v1/hosts/{joined['hostId']}", headers=harness.auth()).status_code == 204
    status, refused = ask(harness, joined["credential"])
    assert (status, refused["error"]["code"]) == (401, "invalid_host_credential")
