"""The control plane's client for host agents (docs/agent-protocol.md), split by noun.

``AgentClient`` holds one agent's nouns (``sandboxes``, ``processes``,
``files``, ``code``, ``shells``, ``images``) over one ``Transport``; each
returns the ``qbox.protocol`` models.
"""

from qbox.server.agent_client.client import AgentClient
from qbox.server.agent_client.files import FileStream
from qbox.server.agent_client.shells import AgentShell, ShellConnector
from qbox.server.agent_client.transport import AgentEndpoint, Relayed

__all__ = ["AgentClient", "AgentEndpoint", "AgentShell", "FileStream", "Relayed", "ShellConnector"]
