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

from qbox.core.errors import AuthenticationError
from qbox.protocol.host import CertificateReply, CertificateRequest
from qbox.server.http import response_models as rm
from qbox.server.http.access import Bucket, allowed, failed_authentication, host_credential
from qbox.server.http.auditing import Audited, note_of
from qbox.server.http.deps import json_body, services_of
from qbox.server.http.openapi import answers, request_body
from qbox.server.principal import HostCredential, Principal
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
async def agent_certificate(request: Request,
                            credential: HostCredential = Depends(host_credential)) -> dict[str, Any]:
    services = services_of(request)
    body = await json_body(request, CertificateRequest)
    try:
        host_id, reply = await host_certificate(services.ctx, credential.secret, body.csr_pem)
    except AuthenticationError:
        failed_authentication(request)
        raise
    if (note := note_of(request)) is not None:
        note.target_id = host_id
    return reply.wire()
