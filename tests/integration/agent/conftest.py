"""Real crun, real overlayfs, a real Debian rootfs: the agent end to end, in process.

The rootfs (minbase bookworm + python3 + procps, with ``user`` uid 1000) is
built once per machine into /var/cache/qbox/test-rootfs (≈20 s) and reused.
Every test cleans up behind itself without trusting the code under test:
containers, overlay mounts and sandbox directories under its data dir go,
even when the test fails.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from qbox.agent import mounts
from qbox.agent.app import create_app
from qbox.agent.host_names import HostNames
from qbox.agent.settings import AgentSettings
from qbox.agent.images.store_tree import ImageConfig, ImageInfo
from qbox.core.errors import NotFoundError
from qbox.core.ids import new_sandbox_id
from tests.agent_names import scrub_names

TEST_ROOTFS = Path("/var/cache/qbox/test-rootfs")
DIGEST = "sha256:" + "ab" * 32
SECRET = "integration-secret"


def _ready(rootfs: Path) -> bool:
    passwd = rootfs / "etc" / "passwd"
    return (rootfs / "usr" / "bin" / "python3").exists() and passwd.exists() and \
        ":1000:1000:" in passwd.read_text()


@pytest.fixture(scope="session")
def test_rootfs() -> Path:
    if os.geteuid() != 0 or shutil.which("crun") is None:
        pytest.fail("agent integration tests need root and crun (run make setup, as root)")
    TEST_ROOTFS.parent.mkdir(parents=True, exist_ok=True)
    with open(TEST_ROOTFS.parent / ".test-rootfs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run may be building it
        if not _ready(TEST_ROOTFS):
            staging = TEST_ROOTFS.with_name(TEST_ROOTFS.name + ".building")
            shutil.rmtree(staging, ignore_errors=True)
            subprocess.run(["mmdebstrap", "--variant=minbase", "--include=python3,procps",
                            "bookworm", str(staging)], check=True, capture_output=True)
            subprocess.run(["chroot", str(staging), "useradd", "-m", "-u", "1000", "-s",
                            "/bin/bash", "user"], check=True)
            shutil.rmtree(TEST_ROOTFS, ignore_errors=True)
            staging.rename(TEST_ROOTFS)
    return TEST_ROOTFS


class RootfsStore:
    """The image store reduced to one image: the test rootfs."""

    def __init__(self, rootfs: Path) -> None:
        self._rootfs = rootfs

    def rootfs_path(self, digest: str) -> Path:
        if digest != DIGEST:
            raise NotFoundError(f"image {digest} is not in this host's store")
        return self._rootfs

    def lower_dirs(self, digest: str) -> list[Path]:
        return [self.rootfs_path(digest)]

    def digests(self) -> list[str]:
        return [DIGEST]

    def kernels(self, digest: str) -> list[dict[str, str]] | None:
        return None  # a base image: its kernelspecs are read from its rootfs

    def config(self, digest: str) -> ImageConfig:
        self.rootfs_path(digest)
        return ImageConfig()

    async def import_image(self, ref: str, name: str) -> ImageInfo:
        raise NotFoundError(f"this test store imports nothing ({ref})")


def force_cleanup(data_dir: Path) -> None:
    """Remove every container, mount and directory the agent may have left."""
    runtime_root = data_dir / "runtime"
    for name in ("crun", "runc"):
        root = runtime_root / name
        if not root.is_dir():
            continue
        for entry in root.iterdir():
            if entry.is_dir():
                subprocess.run([name, "--root", str(root), "delete", "--force", entry.name],
                               capture_output=True)
    force_runsc_cleanup(runtime_root / "runsc")
    for entry in reversed(mounts.read_mountinfo()):
        if entry.mount_point.startswith(str(data_dir) + "/"):
            mounts.umount(entry.mount_point, mounts.MNT_DETACH)
    shutil.rmtree(data_dir / "sandboxes", ignore_errors=True)
    force_network_cleanup(data_dir)


def force_runsc_cleanup(root: Path) -> None:
    """gVisor sandboxes (runsc keeps files, not directories, per container in its root)."""
    if not root.is_dir() or shutil.which("runsc") is None:
        return
    listed = subprocess.run(["runsc", "--root", str(root), "list", "--format", "json"],
                            capture_output=True, text=True)
    for container in json.loads(listed.stdout or "null") or []:
        subprocess.run(["runsc", "--root", str(root), "delete", "--force", container["id"]],
                       capture_output=True)


def force_network_cleanup(data_dir: Path) -> None:
    """Namespaces and nft elements the agent recorded under ``data_dir/network``; then
    its table, the namespaces and cgroup parent named after its data dir."""
    names = HostNames.for_data_dir(data_dir)
    network_dir = data_dir / "network"
    for record_file in network_dir.glob("*/network.json"):
        record = json.loads(record_file.read_text())
        subprocess.run(["ip", "netns", "delete", Path(record["netns"]).name], capture_output=True)
        for nft_set, element in (("sandboxes", f'"{record["ifname"]}" . '
                                               f'{ipaddress.ip_network(record["link"])[2]}'),
                                 ("internet", f'"{record["ifname"]}"')):
            subprocess.run(["nft", f"delete element inet {names.nft_table} {nft_set} "
                                   f"{{ {element} }}"], capture_output=True)
    shutil.rmtree(network_dir, ignore_errors=True)
    scrub_names(data_dir)


@dataclass
class Agent:
    app: FastAPI
    client: httpx.AsyncClient
    settings: AgentSettings

    @property
    def cgroup_parent(self) -> str:
        """This agent's cgroup subtree, relative to a hierarchy (``qbox-<tag>``)."""
        return HostNames.for_data_dir(self.settings.data_dir).cgroup_parent.strip("/")

    @property
    def nft_table(self) -> str:
        return HostNames.for_data_dir(self.settings.data_dir).nft_table

    async def create(self, **extra: object) -> str:
        sandbox_id = new_sandbox_id()
        body = {"id": sandbox_id, "imageDigest": DIGEST, "vcpus": 1, "memoryMb": 512, **extra}
        r = await self.client.post("/sandboxes", json=body)
        assert r.status_code == 201, r.text
        return sandbox_id

    async def exec(self, sandbox_id: str, *argv: str, **extra: object) -> dict:  # type: ignore[type-arg]
        r = await self.client.post(f"/sandboxes/{sandbox_id}/exec",
                                   json={"cmd": argv[0], "args": list(argv[1:]), **extra})
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "data"
    try:
        yield path
    finally:
        force_cleanup(path)


async def start_agent(data_dir: Path, rootfs: Path) -> tuple[FastAPI, AgentSettings]:
    # QBOX_AGENT_RUNTIME=runc runs the same tests on the fallback runtime.
    settings = AgentSettings(data_dir=data_dir, secret=SECRET,
                             runtime=os.environ.get("QBOX_AGENT_RUNTIME", "auto"))
    return create_app(settings, store=RootfsStore(rootfs)), settings  # type: ignore[arg-type]


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), timeout=60,
                             base_url="http://agent/internal/v1",
                             headers={"Authorization": f"Bearer {SECRET}"})


@pytest.fixture
async def agent(data_dir: Path, test_rootfs: Path) -> AsyncIterator[Agent]:
    app, settings = await start_agent(data_dir, test_rootfs)
    async with app.router.lifespan_context(app), client_for(app) as client:
        agent = Agent(app, client, settings)
        try:
            yield agent
        finally:
            for sandbox in (await client.get("/sandboxes")).json():
                await client.delete(f"/sandboxes/{sandbox['id']}")


@pytest.fixture
async def sandbox(agent: Agent) -> str:
    return await agent.create()
