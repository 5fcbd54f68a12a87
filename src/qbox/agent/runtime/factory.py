"""Picking the runtime driver: crun if it works on this host, else runc; or as configured.

"Works" is tested, not assumed: on a hybrid-cgroup host crun is installed
and fails every container until host preparation has run, so the probe
starts (and deletes) one real, empty container. It costs ≈40 ms once per
agent start.
"""

from __future__ import annotations

import json
import logging
import shutil

from qbox.agent.rootfs import DirectoryFilesystem, OverlayFilesystem, SandboxFilesystem
from qbox.agent.runtime.base import RuntimeDriver
from qbox.agent.runtime.child import become_subreaper
from qbox.agent.runtime.crun import OciCliRuntime
from qbox.agent.runtime.fake import FakeRuntime
from qbox.agent.settings import AgentSettings
from qbox.agent.spec import SandboxConfig, oci_config
from qbox.core.errors import InternalError

log = logging.getLogger("qbox.agent.runtime")

PROBE_ID = "qbox-probe"
OCI_RUNTIMES = ("crun", "runc")


async def probe(driver: OciCliRuntime, settings: AgentSettings) -> None:
    """Run and delete an empty container; raise if the runtime cannot."""
    bundle = settings.data_dir / "probe"
    await driver.delete(PROBE_ID)  # left over from an agent killed mid-probe
    shutil.rmtree(bundle, ignore_errors=True)
    (bundle / "rootfs").mkdir(parents=True)
    try:
        # catatonit is static: an empty rootfs is enough for it to run.
        config = oci_config(SandboxConfig(
            id=PROBE_ID, rootfs=bundle / "rootfs", hostname="probe",
            init_source=settings.init_path, vcpus=1, memory_mb=64, pids_limit=16,
        ))
        (bundle / "config.json").write_text(json.dumps(config))
        await driver.run(PROBE_ID, bundle)
        await driver.delete(PROBE_ID)
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


def filesystem_for(runtime: RuntimeDriver) -> SandboxFilesystem:
    # The fake runs without root, so it gets plain directories, not overlays.
    return DirectoryFilesystem() if isinstance(runtime, FakeRuntime) else OverlayFilesystem()

