from __future__ import annotations

from pathlib import Path

from qbox.agent.idmap import IdMapping
from qbox.agent.isolation import IsolationPolicy, init_killed_by_oom
from qbox.agent.rootfs import LayerOptions
from qbox.agent.runtime.base import ExitStatus
from qbox.agent.settings import AgentSettings


def test_policy_from_settings(tmp_path: Path) -> None:
    policy = IsolationPolicy.from_settings(AgentSettings(data_dir=tmp_path, userns_base=300_000))
    assert policy.mapping == IdMapping(300_000)
    assert policy.seccomp is not None and policy.seccomp["defaultErrnoRet"] == 1
    assert policy.rlimits["RLIMIT_CORE"] == (0, 0)
    assert policy.layer_options(None) == LayerOptions(IdMapping(300_000), 2048)
    assert policy.layer_options(64).disk_size_mb == 64
    bare = IsolationPolicy.from_settings(AgentSettings(data_dir=tmp_path, userns_base=None,
                                                       seccomp=False, disk_quota=False))
    assert (bare.mapping, bare.seccomp) == (None, None)
    assert bare.layer_options(64) == LayerOptions()


def test_host_ids_and_a_policy_that_asks_for_nothing() -> None:
    assert IsolationPolicy(mapping=IdMapping()).host_ids(1000, 1000) == (101_000, 101_000)
    assert IsolationPolicy().host_ids(1000, 1000) == (1000, 1000)
    assert IsolationPolicy().config_fields() == {"id_mapping": None, "seccomp": None,
                                                 "seccomp_bpf": None, "rlimits": {},
                                                 "no_swap": False}


def test_no_sysfs_to_prepare_without_a_user_namespace_or_a_joined_netns(tmp_path: Path) -> None:
    assert IsolationPolicy().sysfs_for(tmp_path, Path("/run/netns/x")) is None
    assert IsolationPolicy(mapping=IdMapping()).sysfs_for(tmp_path, None) is None


def test_init_killed_by_oom() -> None:
    assert init_killed_by_oom(ExitStatus.killed_by(9), 1)
    assert not init_killed_by_oom(ExitStatus.killed_by(9), 0)
    assert not init_killed_by_oom(ExitStatus.killed_by(15), 2)
    assert not init_killed_by_oom(None, 2)
    assert not init_killed_by_oom(ExitStatus.killed_by(9), None)
