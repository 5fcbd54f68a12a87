from __future__ import annotations

from typing import Any

from qbox.agent import seccomp


def _rules(profile: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [rule for rule in profile["syscalls"] if name in rule["names"]]


def test_everything_not_listed_fails_with_eperm_on_every_x86_abi() -> None:
    profile = seccomp.default_profile()
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    assert profile["defaultErrnoRet"] == 1
    assert set(profile["architectures"]) == {"SCMP_ARCH_X86_64", "SCMP_ARCH_X86",
                                             "SCMP_ARCH_X32"}


def test_escape_syscalls_are_in_no_rule() -> None:
    profile = seccomp.default_profile()
    named = {name for rule in profile["syscalls"] for name in rule["names"]}
    must_fail = {"mount", "umount2", "unshare", "setns", "keyctl", "add_key", "request_key",
                 "bpf", "kexec_load", "kexec_file_load", "open_by_handle_at",
                 "name_to_handle_at", "perf_event_open", "userfaultfd", "init_module",
                 "finit_module", "delete_module", "reboot", "swapon", "swapoff", "pivot_root",
                 "acct", "clock_settime", "settimeofday", "iopl", "ioperm", "lookup_dcookie",
                 "quotactl", "vm86", "io_uring_setup", "socketcall", "fsopen", "open_tree",
                 "move_mount"}
    assert must_fail <= set(seccomp.REFUSED)
    assert not named & set(seccomp.REFUSED)
    assert not set(seccomp.ALLOWED) & set(seccomp.REFUSED)


def test_allowlist_has_what_ordinary_programs_need_and_no_duplicates() -> None:
    assert len(seccomp.ALLOWED) == len(set(seccomp.ALLOWED))
    for name in ("read", "write", "openat", "execve", "pipe2", "futex", "epoll_wait", "mmap",
                 "rt_sigaction", "wait4", "fchmodat2", "statx", "getrandom", "ptrace"):
        assert name in seccomp.ALLOWED, name


def test_clone_only_without_namespace_flags_and_clone3_is_enosys() -> None:
    profile = seccomp.default_profile()
    (clone,) = _rules(profile, "clone")
    assert clone["action"] == "SCMP_ACT_ALLOW"
    assert clone["args"] == [{"index": 0, "value": 0x7E020000, "valueTwo": 0,
                              "op": "SCMP_CMP_MASKED_EQ"}]
    (clone3,) = _rules(profile, "clone3")
    assert clone3 == {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}


def test_sockets_of_every_family_but_vsock() -> None:
    (socket,) = _rules(seccomp.default_profile(), "socket")
    assert socket["args"] == [{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}]


def test_personality_only_with_the_harmless_personas() -> None:
    rules = _rules(seccomp.default_profile(), "personality")
    assert {rule["args"][0]["value"] for rule in rules} == {0, 8, 0x20000, 0x20008, 0xFFFFFFFF}
    assert all(rule["args"][0]["op"] == "SCMP_CMP_EQ" for rule in rules)


def test_the_profile_compiles_to_a_bpf_program_for_crun() -> None:
    import base64


    from qbox.agent import seccomp_bpf
    encoded = seccomp_bpf.compile_profile(seccomp.default_profile())
    assert encoded is not None, "libseccomp2 is missing (make setup installs it)"
    program = base64.b64decode(encoded)
    assert program and len(program) % 8 == 0  # struct sock_filter is 8 bytes


def test_the_compiled_filter_rides_in_crun_s_annotation() -> None:
    from pathlib import Path

    from qbox.agent import spec
    config = spec.oci_config(spec.SandboxConfig(
        id="sb_abcdefgh12", rootfs=Path("/d/sb/rootfs"), hostname="h",
        init_source=Path("/usr/bin/catatonit"), vcpus=1, memory_mb=64,
        seccomp=seccomp.default_profile(), seccomp_bpf="AAAA"))
    assert config["annotations"] == {"run.oci.seccomp_bpf_data": "AAAA"}
    assert config["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
