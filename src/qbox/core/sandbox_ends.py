"""Why a sandbox ended, in words its user understands.

The agent records a sandbox's end as a short ``exitReason`` (``oom``,
``init killed by signal 9``, ``lost: …``; docs/agent-protocol.md). Users
never see those, nor what a runtime printed: the control plane's
``endReason`` and the agent's ``details.reason`` on a 409 come from here.
"""

from __future__ import annotations

# The agent's exitReason when the OOM killer took the sandbox's init (or gVisor's kernel).
OOM = "oom"

OUT_OF_MEMORY = "out of memory: the sandbox used all of its memory and was stopped"
RUNTIME_STOPPED = "the sandbox's runtime stopped unexpectedly"
HOST_RESTARTED = "the sandbox was lost when its host's agent restarted"
RUNTIME_UNAVAILABLE = "the sandbox's runtime is no longer available on its host"
BOOT_INTERRUPTED = "the sandbox's start was interrupted"
DELETED = "the sandbox was deleted"
# The agent ended it at its deadline itself (no control plane had), or when it fenced itself.
TIMED_OUT = "timeout: the sandbox reached its deadline and its host ended it"
FENCED = ("the sandbox's host lost contact with every control plane and stopped its "
          "sandboxes (fenced)")


def describe_end(exit_reason: str | None) -> str:
    """The user's words for an agent's ``exitReason``."""
    reason = (exit_reason or "").strip()
    if reason == OOM:
        return OUT_OF_MEMORY
    if reason == "deleted":
        return DELETED
    if reason == "boot interrupted":
        return BOOT_INTERRUPTED
    if reason == "timeout":
        return TIMED_OUT
    if reason == "fenced":
        return FENCED
    if reason.startswith("lost: runtime"):
        return RUNTIME_UNAVAILABLE
    if reason.startswith("lost:"):
        return HOST_RESTARTED
    # "init exited…", "init killed by signal N", or anything a runtime said.
    return RUNTIME_STOPPED
