"""What a sandbox in its own user namespace needs from a network namespace it only joins.

The network namespaces of ``qbox.agent.network`` are made by the agent, so
they belong to the host's user namespace, while each sandbox runs in a user
namespace of its own. Root in the sandbox therefore holds no capability
over its network namespace, which is good (it cannot reconfigure its
interface or the routes), but has three side effects this module undoes:

- **sysfs**: the kernel lets only a namespace's owner mount a sysfs for it.
  crun then falls back to a *read-write rbind of the host's /sys* — the
  host's interfaces in ``/sys/class/net`` and more. Instead the agent
  mounts a sysfs from a thread that has entered the namespace (so
  ``/sys/class/net`` lists the sandbox's own ``lo`` and ``eth0``) at
  ``<sandbox>/sys``, and the spec bind-mounts it read-only at ``/sys``.
- **ports below 1024**: binding them needs CAP_NET_BIND_SERVICE in the
  namespace's owner; ``net.ipv4.ip_unprivileged_port_start=0`` opens them
  to every user of the sandbox, as Docker does for its containers.
- **ping**: without CAP_NET_RAW there, ping uses ICMP datagram sockets,
  which ``net.ipv4.ping_group_range`` allows to all groups (Docker's
  default too). Raw sockets stay refused: no spoofed packets.

A thread changes only its own network namespace and exits afterwards, so
the agent's other threads never change namespace.
"""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path

from qbox.agent import mounts

_CLONE_NEWNET = 0x40000000
SYSCTLS = {
    "net/ipv4/ip_unprivileged_port_start": "0",
    "net/ipv4/ping_group_range": "0 2147483647",
}


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(CLONE_NEWNET): {os.strerror(err)}")


def prepare(netns: Path, sys_target: Path) -> None:
    """Mount the namespace's sysfs (read-only) at ``sys_target`` and set its sysctls."""
    failure: list[BaseException] = []

    def inside() -> None:
        try:
            fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd)
            finally:
                os.close(fd)
            # /proc/sys/net is the namespace of whoever opens it: this thread's now.
            for name, value in SYSCTLS.items():
                Path("/proc/sys", name).write_text(value)
            sys_target.mkdir(parents=True, exist_ok=True)
            mounts.mount("sysfs", sys_target, "sysfs",
                         mounts.MS_RDONLY | mounts.MS_NOSUID | mounts.MS_NODEV | mounts.MS_NOEXEC)
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            failure.append(exc)

    thread = threading.Thread(target=inside, name=f"netns-sysfs-{netns.name}", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
