"""What the sandbox manager needs from the network: attach a sandbox, detach it, find it again.

One small Protocol. ``manager.py`` implements it on the host (netns, veth,
nftables); ``fake.py`` holds an in-memory one for tests without root and the
"no network" one (a sandbox gets an empty namespace with loopback only).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Attachment:
    """A sandbox's place on the network."""

    sandbox_id: str
    # The sandbox's IPv4 address on its eth0; None when it has no network.
    address: str | None = None
    # The namespace the runtime joins; None → a new, empty one (loopback only).
    netns_path: Path | None = None
    # Bind-mounted read-only onto the sandbox's /etc/resolv.conf; None → the image's own.
    resolv_conf: Path | None = None
    internet: bool = False


class SandboxNetwork(Protocol):
    async def start(self, keep: Collection[str]) -> dict[str, Attachment]:
        """Prepare the host and reconcile: keep (and return) the attachments of the
        sandboxes in ``keep``, remove every other leftover this agent recorded."""
        ...

    async def attach(self, sandbox_id: str, *, internet: bool) -> Attachment: ...

    def get(self, sandbox_id: str) -> Attachment | None: ...

    async def detach(self, sandbox_id: str) -> None:
        """Remove whatever exists of the sandbox's network; idempotent."""
        ...

    async def close(self) -> None: ...
