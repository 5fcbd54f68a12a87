"""Host preparation on the real machine (latency is measured by bench/, not asserted here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qbox.agent.hostprep import CgroupMode, prepare_host

pytestmark = pytest.mark.integration


def test_host_preparation_is_idempotent_and_leaves_crun_a_usable_host(test_rootfs: Path) -> None:
    first = prepare_host()
    second = prepare_host()
    assert first.ok and second.ok
    assert second.moved_controllers == []
    if second.layout.mode is CgroupMode.HYBRID:
        assert second.layout.unified_mount is not None
        assert Path(second.layout.unified_mount, "cgroup.controllers").read_text().split() == []
