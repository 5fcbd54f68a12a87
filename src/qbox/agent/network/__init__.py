"""Sandbox networking: a network namespace, a veth link and nftables elements per sandbox.

See docs/operations.md ("Networking") for the design: addresses
(``addresses.py``), the firewall (``firewall.py``), DNS (``resolv.py``), the
host side (``manager.py``, imported on demand: it pulls in pyroute2).
"""

from qbox.agent.network.base import Attachment, SandboxNetwork
from qbox.agent.network.factory import create_network
from qbox.agent.network.fake import FakeNetwork, NoNetwork

__all__ = ["Attachment", "FakeNetwork", "NoNetwork", "SandboxNetwork", "create_network"]
