"""Joining a control plane (``qbox agent --join URL --token TOKEN``), once per data dir.

The agent trades the join token for its host credential (``POST /v1/agent/join``) and keeps
what it got in ``DATA_DIR/host.json`` (0600): its host id, the control plane's URL and the
credential its heartbeats carry. The secret the control plane will present on data-plane
calls goes to ``DATA_DIR/agent-secret``, written first: a crash between the two leaves no
host.json, never a host.json beside a secret the control plane does not know. A later
start finds host.json and joins no more (same host id), whatever token it is given. The
token itself is never logged nor written anywhere.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from qbox.agent.cluster_tls import ListenerCert
from qbox.agent.settings import AgentSecret, AgentSettings, write_private
from qbox.protocol.host import HostReport, JoinReply, JoinRequest

log = logging.getLogger("qbox.agent.joining")

HOST_FILE = "host.json"
# A control plane that is down or failing (connection refused, 5xx) is asked again this often.
RETRY_SECONDS = 5.0
# Until the control plane's reply says otherwise (its QBOX_HOST_LOST_SECONDS default).
DEFAULT_FENCE_SECONDS = 60.0


class MembershipEnded(Exception):
    """The control plane refused this host for good (a bad token, a revoked credential): the
    agent stops, non-zero, with a message for the operator."""


@dataclass(frozen=True)
class Membership:
    """What ``DATA_DIR/host.json`` holds: who this host is to which control plane."""

    host_id: str
    control_plane: str
    credential: str = field(repr=False)
    heartbeat_seconds: float = 5.0
    fence_seconds: float = DEFAULT_FENCE_SECONDS

    @classmethod
    def load(cls, data_dir: Path) -> Membership | None:
        path = data_dir / HOST_FILE
        try:
            data = json.loads(path.read_text())
            return cls(host_id=str(data["hostId"]), control_plane=str(data["controlPlane"]),
                       credential=str(data["credential"]),
                       heartbeat_seconds=float(data.get("heartbeatSeconds", 5.0)),
                       fence_seconds=float(data.get("fenceSeconds", DEFAULT_FENCE_SECONDS)))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise MembershipEnded(f"{path} is damaged ({type(exc).__name__}: {exc}); remove "
                                  "the host (`qbox hosts remove`), delete the file and join "
                                  "again with a new token") from None

    def save(self, data_dir: Path) -> None:
        write_private(data_dir / HOST_FILE, json.dumps({
            "hostId": self.host_id, "controlPlane": self.control_plane,
            "credential": self.credential, "heartbeatSeconds": self.heartbeat_seconds,
            "fenceSeconds": self.fence_seconds}, indent=2) + "\n")


class Unanswered(Exception):
    """No usable answer (connection error, timeout, 5xx, 429): worth asking again."""


def refusal_message(response: httpx.Response) -> str:
    """The control plane's own words for a refusal (its error envelope), else the status."""
    try:
        body: Any = response.json()
        message = body["error"]["message"]
        code = body["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"
    return f"{message} ({code})"


async def join(client: httpx.AsyncClient, url: str, token: str,
               report: HostReport, csr_pem: str | None = None) -> JoinReply:
    """One join attempt. MembershipEnded when refused (4xx), Unanswered when worth a retry."""
    body = JoinRequest(token=token, report=report, csr_pem=csr_pem).wire()
    try:
        response = await client.post(f"{url.rstrip('/')}/v1/agent/join", json=body)
    except httpx.HTTPError as exc:
        raise Unanswered(f"{type(exc).__name__}: {exc}") from None
    # 429: the control plane limits failed joins from one address; not a verdict on the token.
    if response.status_code >= 500 or response.status_code == 429:
        raise Unanswered(f"HTTP {response.status_code}")
    if response.status_code >= 400:
        raise MembershipEnded(f"the control plane at {url} refused to join this host: "
                              f"{refusal_message(response)}; create a new token with "
                              "`qbox hosts token create` and start again")
    try:
        return JoinReply.model_validate(response.json())
    except ValueError:
        raise Unanswered(f"a malformed join reply (HTTP {response.status_code})") from None


def control_plane_url(settings: AgentSettings) -> str | None:
    """The control plane this agent reaches: ``--join``, else the one it joined."""
    if settings.join_url:
        return settings.join_url.rstrip("/")
    known = Membership.load(settings.data_dir)
    return known.control_plane if known is not None else None


async def membership(settings: AgentSettings, client: httpx.AsyncClient, secret: AgentSecret,
                     report: Callable[[], Awaitable[HostReport]], *,
                     retry_seconds: float = RETRY_SECONDS,
                     listener: ListenerCert | None = None) -> Membership:
    """This host's membership: the one in host.json, else a new one from joining with
    ``settings.join_token`` (asked again while the control plane does not answer). A
    ``listener`` (an HTTPS one) sends its certificate request with the join and serves
    the certificate that comes back."""
    known = Membership.load(settings.data_dir)
    if known is not None:
        if settings.join_url and settings.join_url.rstrip("/") != known.control_plane:
            log.info("host %s: reaching the control plane at %s (joined at %s)",
                     known.host_id, settings.join_url, known.control_plane)
            known = Membership(known.host_id, settings.join_url.rstrip("/"), known.credential,
                               known.heartbeat_seconds, known.fence_seconds)
        log.info("host %s: already joined (%s); no new join", known.host_id,
                 settings.data_dir / HOST_FILE)
        return known
    if not settings.join_url or not settings.join_token:
        raise MembershipEnded("joining a control plane needs --join URL and --token TOKEN "
                              f"(no {settings.data_dir / HOST_FILE} yet)")
    url = settings.join_url.rstrip("/")
    while True:
        try:
            reply = await join(client, url, settings.join_token, await report(),
                               listener.request() if listener is not None else None)
            break
        except Unanswered as exc:
            log.warning("joining %s: no answer (%s); trying again in %g s", url, exc,
                        retry_seconds)
            await asyncio.sleep(retry_seconds)
    if listener is not None:
        if reply.certificate_pem:
            listener.install(reply.certificate_pem, reply.ca_cert_pem)
        else:
            log.warning("the control plane at %s signed no certificate for this host's HTTPS "
                        "listener: it serves a self-signed one, which no control plane accepts",
                        url)
    secret.replace(reply.agent_secret)
    joined = Membership(reply.host_id, url, reply.credential, reply.heartbeat_seconds,
                        reply.fence_seconds)
    joined.save(settings.data_dir)
    log.info("joined the control plane at %s as host %s", url, joined.host_id)
    return joined
