"""Networks without kernel objects: none at all, and an in-memory one for unit tests."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from qbox.agent.network import resolv
from qbox.agent.network.addresses import AddressPool
from qbox.agent.network.base import Attachment


class NoNetwork:
    """Every sandbox in its own empty namespace: loopback only, no address."""

    async def start(self, keep: Collection[str]) -> dict[str, Attachment]:
        return {}

    async def attach(self, sandbox_id: str, *, internet: bool) -> Attachment:
        return Attachment(sandbox_id)

    def get(self, sandbox_id: str) -> Attachment | None:
        return None

    async def detach(self, sandbox_id: str) -> None:
        pass

    async def close(self) -> None:
        pass


class FakeNetwork:
    """Addresses from a real pool and a real resolv.conf file, but no namespace or firewall."""

    def __init__(self, state_dir: Path, pool: str = "10.213.0.0/16") -> None:
        self._dir = state_dir
        self._pool = AddressPool(pool)
        self._slots: dict[str, int] = {}
        self._attachments: dict[str, Attachment] = {}

    async def start(self, keep: Collection[str]) -> dict[str, Attachment]:
        return {i: a for i, a in self._attachments.items() if i in keep}

    async def attach(self, sandbox_id: str, *, internet: bool) -> Attachment:
        if sandbox_id in self._attachments:
            return self._attachments[sandbox_id]
        lease = self._pool.allocate()
        resolv_conf = self._dir / sandbox_id / "resolv.conf"
        resolv_conf.parent.mkdir(parents=True, exist_ok=True)
        resolv_conf.write_text(resolv.render([]))
        attachment = Attachment(sandbox_id, str(lease.address), None, resolv_conf, internet)
        self._slots[sandbox_id] = lease.slot
        self._attachments[sandbox_id] = attachment
        return attachment

    def get(self, sandbox_id: str) -> Attachment | None:
        return self._attachments.get(sandbox_id)

    async def detach(self, sandbox_id: str) -> None:
        attachment = self._attachments.pop(sandbox_id, None)
        slot = self._slots.pop(sandbox_id, None)
        if slot is not None:
            self._pool.release(slot)
        if attachment is not None and attachment.resolv_conf is not None:
            attachment.resolv_conf.unlink(missing_ok=True)
            attachment.resolv_conf.parent.rmdir()

    async def close(self) -> None:
        pass
