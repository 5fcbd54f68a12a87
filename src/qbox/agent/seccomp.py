"""The sandbox's seccomp profile: an allowlist in the spirit of Docker's default.

Everything not listed fails with EPERM (``defaultErrnoRet`` 1). The list is
Docker's default set as of 2024, written out here and reviewed against this
platform's needs, with these differences:

- ``io_uring_*`` are refused (as Docker now does): a large, often-exploited
  kernel surface that no sandbox workload needs.
- ``name_to_handle_at`` is refused as well as ``open_by_handle_at`` (the
  pair is the "shocker" host-file-handle escape).
- ``socket`` is allowed for every family but ``AF_VSOCK``: these hosts are
  VMs with a vsock transport, which would be a path to the hypervisor that
  no IP firewall sees. For the same reason ``socketcall`` (the i386
  multiplexer, whose arguments seccomp cannot read) is refused: 32-bit
  programs must use the direct socket syscalls (kernel ≥ 4.3, glibc ≥ 2.23).
- ``modify_ldt`` is refused (Wine-era, with a CVE history).
- ``ptrace`` and its relatives (``process_vm_readv``/``writev``, ``kcmp``,
  ``pidfd_getfd``) are allowed, as Docker allows them on kernels ≥ 4.8: the
  seccomp-bypass-through-ptrace hole is closed there, a tracee can only be
  a process of the same sandbox (PID namespace, same uid, no CAP_SYS_PTRACE),
  and debuggers and ``strace`` are legitimate sandbox tools. The runtime's
  own process entering the sandbox is non-dumpable, so it cannot be traced.
- Syscalls newer than this list fail with EPERM too (no ENOSYS stub like
  runc's): glibc ≥ 2.39 falls back from ``fchmodat2`` only on ENOSYS, so it
  is listed (``cachestat``, ``futex_*``, ``map_shadow_stack``, ``mseal`` too).

``clone`` is allowed only without namespace flags and ``clone3`` answers
ENOSYS so that libc falls back to ``clone`` (seccomp cannot read clone3's
flags, which live in memory). That, with ``unshare``/``setns``/``mount``
refused, keeps a sandbox from making user namespaces, where it would be
"root" again. ``personality`` is limited to the harmless personas.
"""

from __future__ import annotations

from typing import Any

EPERM = 1
ENOSYS = 38
AF_VSOCK = 40
# CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER
# | CLONE_NEWPID | CLONE_NEWNET
CLONE_NAMESPACE_FLAGS = 0x7E020000
# PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, and the query value.
ALLOWED_PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

ARCHITECTURES = ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32")

ALLOWED: tuple[str, ...] = (
    # files and directories
    "access", "chdir", "chmod", "chown", "chown32", "close", "close_range", "copy_file_range",
    "creat", "dup", "dup2", "dup3", "faccessat", "faccessat2", "fadvise64", "fadvise64_64",
    "fallocate", "fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown", "fchown32",
    "fchownat", "fcntl", "fcntl64", "fdatasync", "file_getattr", "file_setattr", "flock",
    "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate",
    "ftruncate64", "futimesat", "getcwd", "getdents", "getdents64", "lchown", "lchown32",
    "link", "linkat", "_llseek", "lseek", "lstat", "lstat64", "mkdir", "mkdirat", "mknod",
    "mknodat", "newfstatat", "open", "openat", "openat2", "pread64", "preadv", "preadv2",
    "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink", "readlinkat",
    "readv", "rename", "renameat", "renameat2", "rmdir", "sendfile", "sendfile64", "splice",
    "stat", "stat64", "statfs", "statfs64", "statx", "symlink", "symlinkat", "sync",
    "sync_file_range", "syncfs", "tee", "truncate", "truncate64", "umask", "unlink",
    "unlinkat", "utime", "utimensat", "utimensat_time64", "utimes", "vmsplice", "write",
    "writev", "cachestat",
    # extended attributes
    "fgetxattr", "flistxattr", "fremovexattr", "fsetxattr", "getxattr", "getxattrat",
    "lgetxattr", "listxattr", "listxattrat", "llistxattr", "lremovexattr", "lsetxattr",
    "removexattr", "removexattrat", "setxattr", "setxattrat",
    # file and I/O notification, polling, event fds
    "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait",
    "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "fanotify_mark",
    "inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch", "_newselect",
    "poll", "ppoll", "ppoll_time64", "pselect6", "pselect6_time64", "select", "signalfd",
    "signalfd4", "timerfd_create", "timerfd_gettime", "timerfd_gettime64",
    "timerfd_settime", "timerfd_settime64",
    # asynchronous I/O (not io_uring)
    "io_cancel", "io_destroy", "io_getevents", "io_pgetevents", "io_pgetevents_time64",
    "io_setup", "io_submit", "ioctl", "ioprio_get", "ioprio_set",
    # memory
    "brk", "get_mempolicy", "madvise", "map_shadow_stack", "mbind", "membarrier",
    "memfd_create", "memfd_secret", "mincore", "mlock", "mlock2", "mlockall", "mmap",
    "mmap2", "mprotect", "mremap", "mseal", "msync", "munlock", "munlockall", "munmap",
    "pipe", "pipe2",
    "pkey_alloc", "pkey_free", "pkey_mprotect", "remap_file_pages", "set_mempolicy",
    # processes, threads, scheduling
    "arch_prctl", "capget", "capset", "execve", "execveat", "exit", "exit_group",
    "fork", "get_robust_list", "get_thread_area", "getcpu", "getpgid", "getpgrp", "getpid",
    "getppid", "getpriority", "getrlimit", "getrusage", "getsid", "gettid", "prctl",
    "prlimit64", "process_mrelease", "restart_syscall", "rseq", "sched_get_priority_max",
    "sched_get_priority_min", "sched_getaffinity", "sched_getattr", "sched_getparam",
    "sched_getscheduler", "sched_rr_get_interval", "sched_rr_get_interval_time64",
    "sched_setaffinity", "sched_setattr", "sched_setparam", "sched_setscheduler",
    "sched_yield", "seccomp", "set_robust_list", "set_thread_area", "set_tid_address",
    "setpgid", "setpriority", "setrlimit", "setsid", "ugetrlimit", "vfork", "wait4",
    "waitid", "waitpid", "landlock_add_rule", "landlock_create_ruleset",
    "landlock_restrict_self",
    # debugging a process of the same sandbox (see the module docstring)
    "kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev",
    "ptrace",
    # credentials (within the sandbox's user namespace)
    "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups",
    "getgroups32", "getresgid", "getresgid32", "getresuid", "getresuid32", "getuid",
    "getuid32", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32",
    "setgroups", "setgroups32", "setregid", "setregid32", "setresgid", "setresgid32",
    "setresuid", "setresuid32", "setreuid", "setreuid32", "setuid", "setuid32",
    # signals
    "alarm", "kill", "pause", "pidfd_open", "pidfd_send_signal", "rt_sigaction",
    "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend",
    "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "sigaltstack",
    "sigprocmask", "sigreturn", "tgkill", "tkill",
    # time (reading it; setting it needs CAP_SYS_TIME, which the kernel checks)
    "adjtimex", "clock_adjtime", "clock_adjtime64", "clock_getres", "clock_getres_time64",
    "clock_gettime", "clock_gettime64", "clock_nanosleep", "clock_nanosleep_time64",
    "getitimer", "gettimeofday", "nanosleep", "setitimer", "time", "timer_create",
    "timer_delete", "timer_getoverrun", "timer_gettime", "timer_gettime64",
    "timer_settime", "timer_settime64", "times",
    # futexes
    "futex", "futex_requeue", "futex_time64", "futex_wait", "futex_waitv", "futex_wake",
    # sockets (``socket`` itself is a conditional rule below)
    "accept", "accept4", "bind", "connect", "getpeername", "getsockname", "getsockopt",
    "listen", "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "send",
    "sendmmsg", "sendmsg", "sendto", "setsockopt", "shutdown", "socketpair",
    # System V and POSIX IPC (private to the sandbox's IPC namespace)
    "ipc", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive",
    "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64", "mq_unlink", "msgctl",
    "msgget", "msgrcv", "msgsnd", "semctl", "semget", "semop", "semtimedop",
    "semtimedop_time64", "shmat", "shmctl", "shmdt", "shmget",
    # misc
    "chroot", "getrandom", "sysinfo", "uname",
)

# Never allowed: each one is a known way out of a container, or at the host's
# kernel-wide state. Unit tests check none is in ALLOWED; the integration and
# security suites check the kernel refuses them inside a sandbox.
REFUSED: tuple[str, ...] = (
    "acct", "add_key", "bpf", "clock_settime", "clock_settime64", "create_module",
    "delete_module", "finit_module", "fsconfig", "fsmount", "fsopen", "fspick",
    "get_kernel_syms", "init_module", "io_uring_enter", "io_uring_register",
    "io_uring_setup", "ioperm", "iopl", "kexec_file_load", "kexec_load", "keyctl",
    "listmount", "lookup_dcookie", "migrate_pages", "modify_ldt", "mount", "mount_setattr",
    "move_mount", "move_pages", "name_to_handle_at", "nfsservctl", "open_by_handle_at",
    "open_tree", "perf_event_open", "pivot_root", "query_module", "quotactl", "quotactl_fd",
    "reboot", "request_key", "setdomainname", "sethostname", "setns", "settimeofday",
    "socketcall", "statmount", "stime", "swapoff", "swapon", "syslog", "sysfs", "umount",
    "umount2", "unshare", "uselib", "userfaultfd", "ustat", "vhangup", "vm86", "vm86old",
    "fanotify_init", "_sysctl",
)


def _allow(names: list[str], args: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"names": names, "action": "SCMP_ACT_ALLOW"}
    if args:
        rule["args"] = args
    return rule


def default_profile() -> dict[str, Any]:
    """The OCI ``linux.seccomp`` object of every crun sandbox (inits and commands)."""
    syscalls: list[dict[str, Any]] = [_allow(sorted(ALLOWED))]
    # Rules for one syscall are ORed; the args of one rule are ANDed.
    syscalls += [_allow(["personality"], [{"index": 0, "value": persona, "op": "SCMP_CMP_EQ"}])
                 for persona in ALLOWED_PERSONALITIES]
    syscalls.append(_allow(["clone"], [{"index": 0, "value": CLONE_NAMESPACE_FLAGS,
                                        "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]))
    syscalls.append(_allow(["socket"], [{"index": 0, "value": AF_VSOCK,
                                         "op": "SCMP_CMP_NE"}]))
    syscalls.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS})
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": list(ARCHITECTURES),
        "syscalls": syscalls,
    }
