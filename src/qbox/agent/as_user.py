"""The agent acting as one of a sandbox's users: its files with their rights, and the
process of a command they run (their ids, home, env and limits)."""

from __future__ import annotations

import functools

from qbox.agent import fsid, users
from qbox.agent import spec as specs
from qbox.agent.files import Identity, SandboxFiles
from qbox.agent.isolation import IsolationPolicy
from qbox.agent.openat2 import RootDir
from qbox.agent.runtime.base import ProcessSpec
from qbox.agent.sandbox import Sandbox


def user_of(sandbox: Sandbox, user: str | None) -> str | None:
    """The call's user, else the sandbox's default (None, as "user" is: uid 1000 by any name)."""
    if user:
        return user
    default = sandbox.params.user
    return None if default in (None, "", users.DEFAULT_USER) else default


def files_as(sandbox: Sandbox, isolation: IsolationPolicy, user: str | None) -> SandboxFiles:
    """The sandbox's files as ``user`` (None: the default user) may see and change them."""
    who = users.resolve_in_rootfs(sandbox.rootfs, user_of(sandbox, user))
    host_ids = isolation.acting_ids(who.uid, who.gid)
    if host_ids is None:
        return SandboxFiles(sandbox.rootfs, home=who.home)
    if who.uid == 0:
        # The sandbox's root overrides permissions there: the agent keeps its
        # own filesystem ids (still confined to the root by openat2).
        return SandboxFiles(sandbox.rootfs, home=who.home, owner=host_ids)
    identity: Identity = functools.partial(fsid.acting_as, *host_ids)
    return SandboxFiles(sandbox.rootfs, home=who.home, identity=identity)


def files_owned_by(sandbox: Sandbox, isolation: IsolationPolicy, user: str) -> SandboxFiles:
    """The sandbox's files with its root's rights (still confined to its root by openat2),
    what they create owned by ``user`` (a build's copy step)."""
    who = users.resolve_in_rootfs(sandbox.rootfs, user)
    return SandboxFiles(sandbox.rootfs, home=who.home,
                        owner=isolation.acting_ids(who.uid, who.gid))


def command_process(sandbox: Sandbox, isolation: IsolationPolicy, argv: list[str], *,
                    env: dict[str, str] | None, cwd: str | None, user: str | None,
                    who: users.UserInfo | None = None) -> ProcessSpec:
    """``argv`` as ``user`` (or ``who``, when the caller has resolved it already)."""
    who = who or users.resolve_in_rootfs(sandbox.rootfs, user_of(sandbox, user))
    if cwd is None:
        with RootDir(sandbox.rootfs) as root:
            # A directory that does not exist (nobody's /nonexistent) would fail the chdir.
            defaults = [d for d in (sandbox.params.workdir, who.home) if d]
            cwd = next((d for d in defaults if root.is_dir(d)), "/")
    return specs.exec_process(who, argv, image_env=sandbox.image_env,
                              sandbox_env=sandbox.params.envs, call_env=env, cwd=cwd,
                              rlimits=isolation.rlimits)
