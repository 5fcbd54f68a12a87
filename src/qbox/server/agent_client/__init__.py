"""The control plane's client for host agents (docs/agent-protocol.md), split by noun.

``AgentClient`` holds one agent's nouns (``sandboxes``, ``processes``,
``files``, ``code``, ``shells``, ``images``, ``ports``) over one ``Transport``; each
returns the ``qbox.protocol`` models.
"""

from qbox.server.agent_client.client import AgentClient
from qbox.server.agent_client.files import FileStream
from qbox.server.agent_client.ports import (
    PortSocketConnector,
    PortsClient,
    UpstreamResponse,
    UpstreamSocket,
)
from qbox.server.agent_client.shells import AgentShell, ShellConnector
from qbox.server.agent_client.transport import AgentEndpoint, Relayed

__all__ = ["AgentClient", "AgentEndpoint", "AgentShell", "FileStream", "PortSocketConnector",
           "PortsClient", "Relayed", "ShellConnector", "UpstreamResponse", "UpstreamSocket"]
