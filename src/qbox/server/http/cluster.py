"""The cluster CA's certificate (services/cluster_ca.py), which is public as any CA's is.

Admins read it with ``qbox ca show``; an agent told to pin its fingerprint
(``qbox agent --join https://… --ca-hash sha256:…``) fetches it from ``/v1/agent/ca``
before it holds any credential, and trusts it only if the fingerprint matches.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from qbox.server.http import response_models as rm
from qbox.server.http.access import Bucket, allowed
from qbox.server.http.deps import services_of
from qbox.server.http.openapi import answers
from qbox.server.principal import Principal
from qbox.server.services.cluster_ca import ensure_ca

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
