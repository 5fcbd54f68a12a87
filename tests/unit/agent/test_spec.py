from __future__ import annotations

from pathlib import Path

import pytest

from qbox.agent import seccomp, spec
from qbox.agent.idmap import IdMapping
from qbox.agent.users import UserInfo
from qbox.core.errors import ValidationError


def _config(**overrides: object) -> dict:  # type: ignore[type-arg]
    values: dict[str, object] = dict(id="sb_abcdefgh12", rootfs=Path("/data/sb/rootfs"),
                                     hostname="sb_abcdefgh12", init_source=Path("/usr/bin/catatonit"),
                                     vcpus=2, memory_mb=512, env={"A": "1"})
    values.update(overrides)
    return spec.oci_config(spec.SandboxConfig(**values))  # type: ignore[arg-type]


def test_limits_come_from_vcpus_memory_and_pids() -> None:
    resources = _config(pids_limit=321)["linux"]["resources"]
    assert resources["cpu"] == {"period": 100_000, "quota": 200_000}
    assert resources["memory"] == {"limit": 512 * 1024 * 1024}
    assert resources["pids"] == {"limit": 321}


def test_devices_are_denied_but_the_usual_nodes() -> None:
    devices = _config()["linux"]["resources"]["devices"]
    assert devices[0] == {"allow": False, "access": "rwm"}
    allowed = {(d["major"], d.get("minor")) for d in devices[1:]}
    assert (1, 3) in allowed and (1, 9) in allowed and (136, None) in allowed


def test_namespaces_include_a_new_empty_network_namespace() -> None:
    namespaces = _config()["linux"]["namespaces"]
    assert {n["type"] for n in namespaces} == {"pid", "mount", "uts", "ipc", "cgroup", "network"}
    assert all("path" not in n for n in namespaces)
    assert not any(n["type"] == "user" for n in namespaces)


def test_an_existing_network_namespace_can_be_joined() -> None:
    namespaces = _config(netns_path=Path("/var/run/netns/qbox-1"))["linux"]["namespaces"]
    assert {"type": "network", "path": "/var/run/netns/qbox-1"} in namespaces


def test_init_is_catatonit_bind_mounted_read_only() -> None:
    config = _config()
    assert config["process"]["args"] == ["/.qbox/init", "-P"]
    init_mount = next(m for m in config["mounts"] if m["destination"] == "/.qbox/init")
    assert init_mount["source"] == "/usr/bin/catatonit"
    assert "ro" in init_mount["options"] and "bind" in init_mount["options"]


def test_standard_mounts_and_hardening() -> None:
    config = _config()
    by_dest = {m["destination"]: m for m in config["mounts"]}
    assert by_dest["/proc"]["type"] == "proc"
    assert by_dest["/dev"]["type"] == "tmpfs"
    assert by_dest["/dev/pts"]["type"] == "devpts"
    assert by_dest["/dev/shm"]["type"] == "tmpfs"
    assert "ro" in by_dest["/sys"]["options"]
    assert "/tmp" not in by_dest  # /tmp stays in the writable overlay
    assert "/proc/kcore" in config["linux"]["maskedPaths"]
    assert "/proc/sys" in config["linux"]["readonlyPaths"]
    assert config["process"]["noNewPrivileges"] is True
    assert config["process"]["terminal"] is False


def test_root_hostname_and_cgroup_are_per_sandbox() -> None:
    config = _config()
    assert config["root"] == {"path": "/data/sb/rootfs", "readonly": False}
    assert config["hostname"] == "sb_abcdefgh12"
    assert config["linux"]["cgroupsPath"] == "/qbox/sb_abcdefgh12"


def test_invalid_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        _config(vcpus=0)


USER = UserInfo("user", 1000, 1000, "/home/user", (27, 100))
ROOT = UserInfo("root", 0, 0, "/root")


def test_exec_process_defaults_to_the_users_home_and_identity() -> None:
    process = spec.exec_process(USER, ["id"])
    oci = spec.oci_process(process)
    assert oci["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [27, 100]}
    assert oci["cwd"] == "/home/user"
    assert oci["args"] == ["id"]
    assert "HOME=/home/user" in oci["env"] and "USER=user" in oci["env"]
    assert any(e.startswith("PATH=/usr/local/sbin:") for e in oci["env"])


def test_unprivileged_users_get_no_capabilities_and_root_gets_the_default_set() -> None:
    user_caps = spec.oci_process(spec.exec_process(USER, ["id"]))["capabilities"]
    assert all(v == [] for v in user_caps.values())
    root_caps = spec.oci_process(spec.exec_process(ROOT, ["id"]))["capabilities"]
    assert "CAP_CHOWN" in root_caps["bounding"] and "CAP_SYS_ADMIN" not in root_caps["bounding"]
    assert root_caps["ambient"] == [] and root_caps["inheritable"] == []


def test_env_layers_later_ones_win() -> None:
    process = spec.exec_process(
        USER, ["env"], image_env={"PATH": "/opt/bin:/usr/bin", "LANG": "C.UTF-8", "X": "image"},
        sandbox_env={"X": "sandbox", "Y": "sandbox"}, call_env={"Y": "call"}, cwd="/tmp")
    assert process.env["PATH"] == "/opt/bin:/usr/bin"
    assert process.env["LANG"] == "C.UTF-8"
    assert process.env["X"] == "sandbox" and process.env["Y"] == "call"
    assert process.cwd == "/tmp"


@pytest.mark.parametrize("env", [{"": "x"}, {"A=B": "x"}, {"A": "x\0y"}])
def test_bad_env_is_a_validation_error(env: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        spec.exec_process(USER, ["true"], call_env=env)


def test_relative_cwd_and_empty_command_are_refused() -> None:
    with pytest.raises(ValidationError):
        spec.exec_process(USER, ["true"], cwd="tmp")
    with pytest.raises(ValidationError):
        spec.exec_process(USER, [""])


def test_identity_files_name_the_sandbox() -> None:
    files = spec.identity_files("sb_x1")
    assert files["etc/hostname"] == b"sb_x1\n"
    assert b"127.0.0.1\tlocalhost" in files["etc/hosts"]
    assert b"sb_x1" in files["etc/hosts"]


# --- isolation ---------------------------------------------------------------


def test_a_user_namespace_maps_the_sandbox_ids_to_a_high_range() -> None:
    config = _config(id_mapping=IdMapping(200_000, 65_536))
    assert {"type": "user"} in config["linux"]["namespaces"]
    mapping = [{"containerID": 0, "hostID": 200_000, "size": 65_536}]
    assert config["linux"]["uidMappings"] == mapping == config["linux"]["gidMappings"]
    # Relative to the bundle: the runtime resolves it after entering the namespace.
    assert config["root"]["path"] == "rootfs"


def test_seccomp_profile_is_passed_through_and_absent_by_default() -> None:
    assert "seccomp" not in _config()["linux"]
    profile = seccomp.default_profile()
    assert _config(seccomp=profile)["linux"]["seccomp"] == profile


def test_memory_and_swap_are_limited_together() -> None:
    memory = _config(no_swap=True)["linux"]["resources"]["memory"]
    assert memory == {"limit": 512 * 1024 * 1024, "swap": 512 * 1024 * 1024}


def test_a_prepared_sysfs_is_bound_read_only() -> None:
    mounts = {m["destination"]: m for m in _config(sysfs_source=Path("/d/sb/sys"))["mounts"]}
    assert mounts["/sys"]["type"] == "bind" and mounts["/sys"]["source"] == "/d/sb/sys"
    assert {"ro", "nosuid", "noexec", "nodev"} <= set(mounts["/sys"]["options"])


def test_rlimits_cap_open_files_at_the_hosts_hard_limit_and_forbid_core_dumps() -> None:
    assert spec.sandbox_rlimits(20_000) == {"RLIMIT_NOFILE": (20_000, 20_000),
                                            "RLIMIT_CORE": (0, 0)}
    assert spec.sandbox_rlimits(1 << 20)["RLIMIT_NOFILE"] == (65_536, 65_536)
    assert spec.sandbox_rlimits(-1)["RLIMIT_NOFILE"] == (65_536, 65_536)  # RLIM_INFINITY
    limits = spec.sandbox_rlimits(20_000)
    init = _config(rlimits=limits)["process"]
    assert {"type": "RLIMIT_NOFILE", "soft": 20_000, "hard": 20_000} in init["rlimits"]
    command = spec.oci_process(spec.exec_process(USER, ["true"], rlimits=limits))
    assert {"type": "RLIMIT_CORE", "soft": 0, "hard": 0} in command["rlimits"]


def test_capabilities_are_dockers_set_for_root_and_none_for_others() -> None:
    root = spec.oci_process(spec.exec_process(UserInfo("root", 0, 0, "/root"), ["id"]))
    user = spec.oci_process(spec.exec_process(USER, ["id"]))
    assert set(root["capabilities"]["bounding"]) == set(spec.DEFAULT_CAPABILITIES)
    assert "CAP_SYS_ADMIN" not in root["capabilities"]["effective"]
    assert all(caps == [] for caps in user["capabilities"].values())
    assert root["noNewPrivileges"] is user["noNewPrivileges"] is True
