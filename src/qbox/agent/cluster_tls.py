"""TLS of a joined agent: which control plane it trusts, and its own listener's certificate.

Joining over https, the agent checks the control plane's certificate against the CA its
operator named: a PEM file (``--ca-cert``), or the cluster CA's fingerprint
(``--ca-hash sha256:…``, printed in the join command), in which case it fetches the CA's
certificate from ``/v1/agent/ca`` and trusts it only if the fingerprint matches. Whatever
it trusted is kept in DATA_DIR/tls/control-plane-ca.pem for every later heartbeat and
restart; with neither option it trusts the system's roots (a control plane behind a
public certificate).

With ``--listen``, the agent serves HTTPS with a key it makes (DATA_DIR/tls/agent.key,
0600) and the certificate the cluster CA signed at the join, from the request it sent
(``JoinRequest.csrPem``). Until the join has answered it serves a self-signed stand-in:
no control plane dials it before then. A month before that certificate ends, or when it
is gone (the cluster CA was replaced), the agent asks for a new one with its host
credential (``POST /v1/agent/certificate``). docs/operations.md, "TLS between hosts and
control plane", has the whole picture.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from qbox.agent.settings import write_private
from qbox.core.cert_fingerprint import fingerprint, parse_fingerprint
from qbox.core.timefmt import utcnow
from qbox.protocol.host import CertificateReply, CertificateRequest

log = logging.getLogger("qbox.agent.tls")

TLS_DIR = "tls"
CONTROL_PLANE_CA = "control-plane-ca.pem"
CLUSTER_CA = "cluster-ca.pem"
KEY_FILE = "agent.key"
CERT_FILE = "agent.crt"
# The stand-in certificate lives only until the join answers.
STAND_IN_VALIDITY = timedelta(days=1)
FETCH_RETRY_SECONDS = 5.0
# A host's certificate lasts a year; a new one is asked for this long before its end,
# checked this often, and asked again this soon after a failure.
RENEW_BEFORE = timedelta(days=30)
RENEW_CHECK_SECONDS = 12 * 3600.0
RENEW_RETRY_SECONDS = 60.0


class TrustRefused(Exception):
    """The control plane's CA is not the one the operator named: the agent stops."""


def tls_dir(data_dir: Path) -> Path:
    return data_dir / TLS_DIR


def _context(ca_pem: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=ca_pem)


def _checked(pem: str, pinned: str | None, where: str) -> str:
    if pinned is None:
        return pem
    try:
        found = fingerprint(pem)
    except ValueError:
        raise TrustRefused(f"no PEM certificate {where}") from None
    if found != parse_fingerprint(pinned):
        raise TrustRefused(f"the CA certificate {where} has fingerprint {found}, not "
                           f"{parse_fingerprint(pinned)} (--ca-hash): not trusting it")
    return pem


async def fetch_pinned_ca(url: str, pinned: str, *, retry_seconds: float = FETCH_RETRY_SECONDS,
                          transport: httpx.AsyncBaseTransport | None = None) -> str:
    """The cluster CA's certificate from ``url``, trusted because its fingerprint is ``pinned``
    (the connection itself is not checked: nothing is trusted yet). Asked again while the
    control plane does not answer; TrustRefused when it answers with another CA."""
    parse_fingerprint(pinned)
    async with httpx.AsyncClient(verify=False, transport=transport, timeout=10.0) as client:
        while True:
            try:
                response = await client.get(f"{url.rstrip('/')}/v1/agent/ca")
                response.raise_for_status()
                pem = str(response.json()["certificatePem"])
                break
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                log.warning("fetching the cluster CA from %s: %s; trying again in %g s",
                            url, exc, retry_seconds)
                await asyncio.sleep(retry_seconds)
    return _checked(pem, pinned, f"served by {url}")


async def control_plane_trust(data_dir: Path, url: str, *, ca_cert: Path | None = None,
                              ca_hash: str | None = None,
                              transport: httpx.AsyncBaseTransport | None = None) -> ssl.SSLContext | None:
    """What the agent's client checks the control plane's certificate with (None: plain http).
    The CA named once is kept in DATA_DIR/tls/, so a restart needs neither option again."""
    if not url.startswith("https://"):
        return None
    if ca_hash is not None:
        try:
            parse_fingerprint(ca_hash)
        except ValueError as exc:
            raise TrustRefused(str(exc)) from None
    kept = tls_dir(data_dir) / CONTROL_PLANE_CA
    if ca_cert is not None:
        pem = _checked(ca_cert.read_text(), ca_hash, f"in {ca_cert}")
    elif kept.exists():
        pem = _checked(kept.read_text(), ca_hash,
                       f"this host trusts ({kept}; remove it to trust another)")
    elif ca_hash is not None:
        pem = await fetch_pinned_ca(url, ca_hash, transport=transport)
    else:
        return _context(None)
    try:
        context = _context(pem)
    except ssl.SSLError as exc:
        raise TrustRefused(f"not a PEM CA certificate: {exc}") from None
    tls_dir(data_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    if not kept.exists() or kept.read_text() != pem:
        write_private(kept, pem)
    return context


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name.strip("[]"))))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


class ListenerCert:
    """The agent's HTTPS listener: its key, its certificate (a stand-in until joined) and
    the live TLS context uvicorn serves with, so a certificate from the join takes effect
    for the next connection without a restart."""

    def __init__(self, data_dir: Path, names: list[str]) -> None:
        self.dir = tls_dir(data_dir)
        self.names = names
        self.key_file = self.dir / KEY_FILE
        self.cert_file = self.dir / CERT_FILE
        self._context: ssl.SSLContext | None = None

    def _key(self) -> ec.EllipticCurvePrivateKey:
        if self.key_file.exists():
            key = serialization.load_pem_private_key(self.key_file.read_bytes(), password=None)
            if isinstance(key, ec.EllipticCurvePrivateKey):
                return key
        key = ec.generate_private_key(ec.SECP256R1())
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # A certificate left from a key that is gone is of no use: a new one is asked for.
        self.cert_file.unlink(missing_ok=True)
        write_private(self.key_file, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()).decode())
        return key

    def _certificate(self) -> x509.Certificate | None:
        if not self.cert_file.exists():
            return None
        return x509.load_pem_x509_certificate(self.cert_file.read_bytes())

    @property
    def signed(self) -> bool:
        """Whether the listener has a certificate the cluster CA signed (not the stand-in)."""
        certificate = self._certificate()
        return certificate is not None and certificate.issuer != certificate.subject

    def due(self) -> bool:
        """Whether to ask for a new certificate: none signed, or its end is near."""
        certificate = self._certificate()
        if certificate is None or certificate.issuer == certificate.subject:
            return True
        return certificate.not_valid_after_utc - utcnow() < RENEW_BEFORE

    def context(self) -> ssl.SSLContext:
        """The server-side context, made once: with the signed certificate if there is one,
        else with a self-signed stand-in written now."""
        if self._context is None:
            key = self._key()
            if not self.cert_file.exists():
                write_private(self.cert_file, self._stand_in(key))
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.cert_file, self.key_file)
            self._context = context
        return self._context

    def _stand_in(self, key: ec.EllipticCurvePrivateKey) -> str:
        now = utcnow()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qbox agent (not joined yet)")])
        certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                       .public_key(key.public_key()).serial_number(x509.random_serial_number())
                       .not_valid_before(now).not_valid_after(now + STAND_IN_VALIDITY)
                       .add_extension(_san(self.names), critical=False)
                       .sign(key, hashes.SHA256()))
        return certificate.public_bytes(serialization.Encoding.PEM).decode()

    def request(self) -> str:
        """The certificate request (PEM) for ``JoinRequest.csrPem``: this key, these names."""
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qbox agent")]))
               .add_extension(_san(self.names), critical=False)
               .sign(self._key(), hashes.SHA256()))
        return csr.public_bytes(serialization.Encoding.PEM).decode()

    def install(self, certificate_pem: str, ca_pem: str | None) -> None:
        """Keep the certificate the join brought and serve it from the next connection on."""
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private(self.cert_file, certificate_pem)
        if ca_pem:
            write_private(self.dir / CLUSTER_CA, ca_pem)
        if self._context is not None:
            self._context.load_cert_chain(self.cert_file, self.key_file)
        log.info("serving the certificate the cluster CA signed for %s", ", ".join(self.names))


async def renew(client: httpx.AsyncClient, url: str, credential: str, listener: ListenerCert) -> None:
    """Ask the control plane at ``url`` for a new certificate and serve it. httpx.HTTPError
    or ValueError when none came."""
    response = await client.post(f"{url.rstrip('/')}/v1/agent/certificate",
                                 json=CertificateRequest(csr_pem=listener.request()).wire(),
                                 headers={"Authorization": f"Bearer {credential}"})
    response.raise_for_status()
    reply = CertificateReply.model_validate(response.json())
    listener.install(reply.certificate_pem, reply.ca_cert_pem)


async def keep_certificate(client: httpx.AsyncClient, url: str, credential: str, listener: ListenerCert,
                           *, check_seconds: float = RENEW_CHECK_SECONDS,
                           retry_seconds: float = RENEW_RETRY_SECONDS) -> None:
    """Renew the listener's certificate whenever it is due, checking now and then every
    ``check_seconds``, until cancelled. A failure is logged and tried again soon; a revoked
    credential ends the agent through its heartbeats, not here."""
    while True:
        wait = check_seconds
        if listener.due():
            try:
                await renew(client, url, credential, listener)
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("asking %s for this host's certificate: %s; trying again in %g s",
                            url, exc, retry_seconds)
                wait = retry_seconds
        await asyncio.sleep(wait)


def listener_names(advertise: str, listen: str | None) -> list[str]:
    """The names the listener's certificate is for: the advertised URL's host, and the
    listen address's when it is a specific one."""
    names = [httpx.URL(advertise).host]
    if listen:
        host = listen.rpartition(":")[0].strip("[]")
        if host and host not in ("0.0.0.0", "::") and host not in names:
            names.append(host)
    return names


def serve_https(config: Any, listener: ListenerCert) -> None:
    """Have a uvicorn Config (not loaded yet) serve HTTPS with ``listener``'s live context:
    loaded here, its context replaced by ours before the server starts."""
    config.load()
    config.ssl = listener.context()
