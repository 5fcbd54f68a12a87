"""Picking the runtime driver: crun if it works on this host, else runc; or as configured.

"Works" is tested, not assumed: on a hybrid-cgroup host crun is installed
and fails every container until host preparation has run, so the probe
starts (and deletes) one real, empty container. It costs ≈40 ms once per
agent start.
"""

from __future__ import annotations

import json
import logging
import os
import shutil

from qbox.agent.host_names import HostNames
from qbox.agent.rootfs import DirectoryFilesystem, OverlayFilesystem, SandboxFilesystem
from qbox.agent.runtime.base import RuntimeCapability, RuntimeDriver
from qbox.agent.runtime.child import become_subreaper
from qbox.agent.runtime.crun import OciCliRuntime
from qbox.agent.runtime.fake import FakeRuntime
from qbox.agent.runtime.runsc import RunscRuntime, probe_features
from qbox.agent.settings import AgentSettings
from qbox.agent.spec import SandboxConfig, oci_config
from qbox.core.errors import InternalError

log = logging.getLogger("qbox.agent.runtime")

PROBE_ID = "qbox-probe"
RUNSC_PROBE_ID = "qbox-probe-runsc"
OCI_RUNTIMES = ("crun", "runc")


async def probe(driver: OciCliRuntime, settings: AgentSettings,
                probe_id: str = PROBE_ID) -> None:
    """Run and delete an empty container; raise if the runtime cannot."""
    bundle = settings.data_dir / probe_id
    await driver.delete(probe_id)  # left over from an agent killed mid-probe
    shutil.rmtree(bundle, ignore_errors=True)
    (bundle / "rootfs").mkdir(parents=True)
    try:
        # catatonit is static: an empty rootfs is enough for it to run. Under
        # runsc the pids limit also counts gVisor's own threads.
        config = oci_config(SandboxConfig(
            id=probe_id, rootfs=bundle / "rootfs", hostname="probe",
            init_source=settings.init_path, vcpus=1, memory_mb=64, pids_limit=256,
            cgroup_parent=HostNames.for_data_dir(settings.data_dir).cgroup_parent,
        ))
        (bundle / "config.json").write_text(json.dumps(config))
        await driver.run(probe_id, bundle)
        await driver.delete(probe_id)
    finally:
        shutil.rmtree(bundle, ignore_errors=True)


async def create_runtime(settings: AgentSettings) -> RuntimeDriver:
    if settings.runtime == "fake":
        return FakeRuntime()
    # Commands and inits are adopted by the agent (see child.py).
    become_subreaper()
    names = OCI_RUNTIMES if settings.runtime == "auto" else (settings.runtime,)
    problems: list[str] = []
    for name in names:
        binary = shutil.which(name)
        if binary is None:
            problems.append(f"{name}: not installed")
            continue
        driver = OciCliRuntime(binary, settings.runtime_root / name, name=name,
                               scratch_dir=settings.runtime_root / "exec")
        try:
            await probe(driver, settings)
        except Exception as exc:  # noqa: BLE001 - any failure means "try the next one"
            problems.append(f"{name}: {exc}")
            log.warning("runtime %s does not work here: %s", name, exc)
            continue
        log.info("using runtime %s (%s)", name, binary)
        return driver
    raise InternalError("no working OCI runtime: " + "; ".join(problems))


async def create_runsc(settings: AgentSettings) -> RunscRuntime | None:
    """gVisor, if runsc is installed and runs a sandbox here; else None (spawns that ask
    for it are refused). Costs one probe sandbox per agent start."""
    if settings.runtime == "fake" or not settings.runsc:
        return None
    binary = shutil.which("runsc")
    if binary is None:
        log.info("runsc is not installed: gVisor sandboxes are not offered")
        return None
    become_subreaper()
    try:
        flags = await probe_features(binary)
        driver = RunscRuntime(binary, settings.runtime_root / "runsc", flags=flags,
                              scratch_dir=settings.runtime_root / "runsc-exec")
        # Probes of earlier agents killed mid-way; the pid keeps two agents
        # on one host (tests) out of each other's probe cgroup.
        for stale in await driver.list():
            if stale.id.startswith(RUNSC_PROBE_ID):
                await driver.delete(stale.id)
        await probe(driver, settings, f"{RUNSC_PROBE_ID}-{os.getpid()}")
    except Exception as exc:  # noqa: BLE001 - gVisor is optional: the agent runs without it
        log.warning("runsc does not work here, gVisor sandboxes are not offered: %s", exc)
        return None
    log.info("gVisor available: %s %s", binary, " ".join(flags))
    return driver


def filesystem_for(runtime: RuntimeDriver, settings: AgentSettings | None = None
                   ) -> SandboxFilesystem:
    # A runtime that isolates nothing runs without root: plain directories, not overlays.
    if RuntimeCapability.ISOLATES not in runtime.capabilities:
        return DirectoryFilesystem()
    return OverlayFilesystem(settings.disks_dir if settings is not None else None)

