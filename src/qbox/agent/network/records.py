"""What the agent remembers of each sandbox's network: ``DATA_DIR/network/<id>/``.

``network.json`` is written *before* any kernel object exists, so a crash at
any point leaves a record naming everything that might need removing; the
next agent's reconcile removes it (or keeps it for a sandbox still running).
``resolv.conf`` beside it is bind-mounted into the sandbox.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from qbox.agent.network.addresses import Lease

RECORD_FILE = "network.json"
RESOLV_FILE = "resolv.conf"


@dataclass(frozen=True)
class NetworkRecord:
    sandbox_id: str
    slot: int
    link: str  # the /30, e.g. "10.213.0.4/30"
    ifname: str
    netns: str
    internet: bool

    @property
    def lease(self) -> Lease:
        return Lease(self.slot, IPv4Network(self.link), self.ifname)

    @property
    def address(self) -> IPv4Address:
        return self.lease.address


class RecordStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, sandbox_id: str) -> Path:
        return self.directory / sandbox_id

    def resolv_conf(self, sandbox_id: str) -> Path:
        return self.path(sandbox_id) / RESOLV_FILE

    def save(self, record: NetworkRecord) -> None:
        # 0755 down to the file: a sandbox's runtime (possibly in a user
        # namespace) must be able to open resolv.conf for its bind mount.
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o755)
        folder = self.path(record.sandbox_id)
        folder.mkdir(exist_ok=True, mode=0o755)
        tmp = folder / (RECORD_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(record)))
        os.replace(tmp, folder / RECORD_FILE)

    def write_resolv_conf(self, sandbox_id: str, text: str) -> Path:
        path = self.resolv_conf(sandbox_id)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.chmod(0o644)
        os.replace(tmp, path)
        return path

    def remove(self, sandbox_id: str) -> None:
        shutil.rmtree(self.path(sandbox_id), ignore_errors=True)

    def load(self, sandbox_id: str) -> NetworkRecord | None:
        """The record of ``sandbox_id``; None if there is none or it is unreadable."""
        try:
            data = json.loads((self.path(sandbox_id) / RECORD_FILE).read_text())
            return NetworkRecord(**data)
        except (OSError, ValueError, TypeError):
            return None

    def __iter__(self) -> Iterator[tuple[str, NetworkRecord | None]]:
        """Every sandbox id with a folder here, and its record (None if unreadable)."""
        if not self.directory.is_dir():
            return
        for folder in sorted(self.directory.iterdir()):
            yield folder.name, self.load(folder.name)
