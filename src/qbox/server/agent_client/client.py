"""One host agent's client: its nouns over one transport."""

from __future__ import annotations

import httpx

from qbox.protocol.host import Health
from qbox.server.agent_client.code import CodeClient
from qbox.server.agent_client.files import FileClient
from qbox.server.agent_client.images import ImageClient
from qbox.server.agent_client.ports import PortsClient, PortSocketConnector
from qbox.server.agent_client.processes import ProcessClient
from qbox.server.agent_client.sandboxes import SandboxClient
from qbox.server.agent_client.shells import ShellClient, ShellConnector
from qbox.server.agent_client.transport import AgentEndpoint, Transport, parsed


class AgentClient:
    """``agent.sandboxes.create(spec)``, ``agent.processes.exec(id, request)``, … against one
    agent. ``transport`` (HTTP), ``shell_connector`` and ``port_connector`` (WebSockets)
    replace the real wire: tests reach an agent app in-process through them."""

    def __init__(self, endpoint: AgentEndpoint, transport: httpx.AsyncBaseTransport | None = None,
                 shell_connector: ShellConnector | None = None,
                 port_connector: PortSocketConnector | None = None) -> None:
        self._transport = Transport(endpoint, transport)
        self.sandboxes = SandboxClient(self._transport)
        self.processes = ProcessClient(self._transport)
        self.files = FileClient(self._transport)
        self.code = CodeClient(self._transport)
        self.images = ImageClient(self._transport)
        self.shells = ShellClient(endpoint, shell_connector)
        self.ports = PortsClient(self._transport, endpoint, port_connector)

    async def health(self) -> Health:
        return parsed(Health, await self._transport.call("GET", "/health"))

    async def aclose(self) -> None:
        await self._transport.aclose()
