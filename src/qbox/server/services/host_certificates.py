"""A joined host's new listener certificate, asked for with its host credential.

A host's certificate lasts a year and is signed by the cluster CA of its join; the agent
asks for a new one, from a new certificate request, when its own nears its end or is
gone (the CA was replaced: docs/operations.md). Only a host that holds a live credential
gets one, and only for its own id.
"""

from __future__ import annotations

from sqlalchemy import select

from qbox.core.errors import InvalidHostCredentialError
from qbox.protocol.host import CertificateReply
from qbox.server.db.tables import Host
from qbox.server.services.cluster_ca import ensure_ca, sign_csr
from qbox.server.services.context import ServiceContext
from qbox.server.services.host_credentials import hash_secret


async def host_certificate(ctx: ServiceContext, credential: str, csr_pem: str) -> tuple[str, CertificateReply]:
    """(the host's id, its new certificate and the CA's). InvalidHostCredentialError for a
    credential no live host holds; ValidationError for a request the CA will not sign."""
    async with ctx.sessions() as session:
        host_id = (await session.execute(select(Host.id).where(
            Host.credential_hash == hash_secret(credential), Host.removed_at.is_(None)))).scalar_one_or_none()
    if host_id is None:
        raise InvalidHostCredentialError("this host's credential is unknown or was revoked "
                                         "(the host was removed): join it again")
    ca = await ensure_ca(ctx)
    return host_id, CertificateReply(certificate_pem=sign_csr(ca, csr_pem, host_id), ca_cert_pem=ca.cert_pem)
