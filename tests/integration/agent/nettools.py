"""Test-only network scaffolding: listeners in chosen namespaces and a stand-in "outside world".

No traffic leaves this machine. The "world" is a network namespace the test
creates, reached from the host over a veth in TEST-NET-2 (198.51.100.0/24);
inside it, on its loopback, live a fake cloud metadata service
(169.254.169.254) and a fake internet host (an address in TEST-NET-3,
203.0.113.0/24), each routed from the host through the veth.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

CLONE_NEWNET = 0x40000000
METADATA = "169.254.169.254"

# Run inside a sandbox: connect, print the outcome ("connected" or "failed <errno>").
CONNECT = ("import socket, sys\n"
           "try:\n"
           "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()\n"
           "    print('connected')\n"
           "except OSError as exc:\n"
           "    print('failed', exc.errno)\n")


def sh(*argv: str, check: bool = True) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


def listen(host: str, netns: Path | None = None) -> socket.socket:
    """A non-blocking TCP listener on ``host`` (port chosen by the kernel), in ``netns``."""
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def run() -> None:
        # A socket stays in the namespace it was created in; the thread that
        # entered the namespace just exits.
        try:
            if netns is not None:
                fd = os.open(netns, os.O_RDONLY)
                try:
                    if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns")
                finally:
                    os.close(fd)
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, 0))
            sock.listen(16)
            sock.setblocking(False)
            made.append(sock)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            failed.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return made[0]


def port(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


def received_nothing(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return True
    conn.close()
    return False


def host_connects(address: str, to_port: int) -> bool:
    try:
        socket.create_connection((address, to_port), timeout=3).close()
        return True
    except OSError:
        return False


@dataclass
class World:
    name: str
    host_ifname: str
    host_side: str
    world_side: str
    internet_host: str
    routes: list[str] = field(default_factory=list)

    @property
    def netns(self) -> Path:
        return Path("/run/netns") / self.name


@contextmanager
def fake_world() -> Iterator[World]:
    token = secrets.token_hex(3)
    k = secrets.randbelow(63)
    world = World(name=f"qbt-{token}", host_ifname=f"qbt{token}h",
                  host_side=f"198.51.100.{4 * k + 1}", world_side=f"198.51.100.{4 * k + 2}",
                  internet_host=f"203.0.113.{secrets.randbelow(250) + 2}")
    try:
        sh("ip", "netns", "add", world.name)
        sh("ip", "link", "add", world.host_ifname, "type", "veth", "peer", "name", "eth0",
           "netns", world.name)
        sh("ip", "addr", "add", f"{world.host_side}/30", "dev", world.host_ifname)
        sh("ip", "link", "set", world.host_ifname, "up")
        inside = ("ip", "-n", world.name)
        sh(*inside, "addr", "add", f"{world.world_side}/30", "dev", "eth0")
        sh(*inside, "link", "set", "eth0", "up")
        sh(*inside, "link", "set", "lo", "up")
        for address in (METADATA, world.internet_host):
            sh(*inside, "addr", "add", f"{address}/32", "dev", "lo")
        sh(*inside, "route", "add", "default", "via", world.host_side)
        for address in (METADATA, world.internet_host):
            sh("ip", "route", "replace", f"{address}/32", "via", world.world_side)
            world.routes.append(address)
        yield world
    finally:
        for address in world.routes:
            sh("ip", "route", "del", f"{address}/32", "via", world.world_side, check=False)
        sh("ip", "link", "del", world.host_ifname, check=False)
        sh("ip", "netns", "delete", world.name, check=False)


def host_address() -> str:
    """One of this host's own non-loopback IPv4 addresses, not a sandbox or test link."""
    for line in sh("ip", "-4", "-o", "addr", "show").splitlines():
        fields = line.split()
        ifname, cidr = fields[1], fields[3]
        if ifname != "lo" and not ifname.startswith("qb"):  # sandbox (qb-N, qb<tag>-N), test (qbt…)
            return cidr.split("/")[0]
    raise RuntimeError("the host has no non-loopback IPv4 address")
