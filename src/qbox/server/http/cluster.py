"""The cluster CA (services/cluster_ca.py): its certificate, public as any CA's is, and
new certificates for joined hosts.

Admins read it with ``qbox ca show``; an agent told to pin its fingerprint
(``qbox agent --join https://… --ca-hash sha256:…``) fetches it from ``/v1/agent/ca``
before it holds any credential, and trusts it only if the fingerprint matches. A joined
host asks for a new listener certificate with its host credential
(``/v1/agent/certificate``, services/host_certificates.py).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from qbox.core.errors import AuthenticationError, InvalidHostCredentialError
from qbox.protocol.host import CertificateReply, CertificateRequest
from qbox.server.http import response_models as rm
from qbox.server.http.access import Bucket, allowed, rate_limited
from qbox.server.http.auditing import Audited, note_of
from qbox.server.http.deps import client_ip, json_body, services_of
from qbox.server.http.openapi import answers, request_body
from qbox.server.principal import Principal
from qbox.server.services.cluster_ca import ensure_ca
from qbox.server.services.host_certificates import host_certificate

router = APIRouter()


async def _ca(request: Request) -> dict[str, Any]:
    ca = await ensure_ca(services_of(request).ctx)
    return {"certificatePem": ca.cert_pem, "fingerprint": ca.fingerprint}


@router.get("/v1/cluster/ca", responses=answers(200, rm.ClusterCaInfo))
async def cluster_ca(request: Request,
                     principal: Principal = allowed("hosts:read", Bucket.REQUESTS)) -> dict[str, Any]:
    return await _ca(request)


@router.get("/v1/agent/ca", responses=answers(200, rm.ClusterCaInfo))
async def agent_ca(request: Request) -> dict[str, Any]:
    # No credential: a joining agent asks before it has one, and checks the answer itself.
    return await _ca(request)


@router.post("/v1/agent/certificate", openapi_extra=request_body(CertificateRequest),
             responses=answers(200, CertificateReply, 401),
             dependencies=[Depends(Audited("host.certificate").declare)])
async def agent_certificate(request: Request) -> dict[str, Any]:
    services = services_of(request)
    scheme, _, credential = request.headers.get("authorization", "").partition(" ")
    try:
        if scheme.lower() != "bearer" or not credential.strip():
            raise InvalidHostCredentialError("missing host credential: send 'Authorization: Bearer qbh_…'")
        body = await json_body(request, CertificateRequest)
        host_id, reply = await host_certificate(services.ctx, credential.strip(), body.csr_pem)
    except AuthenticationError:
        if wait := services.limits.auth_failures.check(client_ip(request)):
            raise rate_limited(wait, "failed authentications from this address") from None
        raise
    if (note := note_of(request)) is not None:
        note.target_id = host_id
    return reply.wire()
