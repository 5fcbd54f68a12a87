"""The runtime drivers of this agent, by the name a sandbox's spec asks for (docs/isolation.md).

"crun" is the default driver (crun, or runc where crun cannot run); others
("runsc") stand beside it. A sandbox stays with the runtime it was created
with, across agent restarts.
"""

from __future__ import annotations

from collections.abc import ItemsView, Mapping

from qbox.agent.runtime.base import DEFAULT_RUNTIME, RuntimeDriver
from qbox.agent.sandbox import Sandbox
from qbox.core.errors import SandboxNotActiveError, TemplateNotReadyError


class Runtimes:
    def __init__(self, default: RuntimeDriver,
                 others: Mapping[str, RuntimeDriver] | None = None) -> None:
        self._by_name: dict[str, RuntimeDriver] = {DEFAULT_RUNTIME: default, **(others or {})}

    @property
    def names(self) -> list[str]:
        return sorted(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def items(self) -> ItemsView[str, RuntimeDriver]:
        return self._by_name.items()

    def for_spawn(self, name: str) -> RuntimeDriver:
        """The driver a new sandbox asks for; refused when this host does not offer it."""
        runtime = self._by_name.get(name)
        if runtime is None:
            raise TemplateNotReadyError(
                f"runtime {name} is not available on this host",
                details={"runtime": name, "availableRuntimes": self.names})
        return runtime

    def of(self, sandbox: Sandbox) -> RuntimeDriver:
        """The driver a sandbox runs under; refused when it is gone (uninstalled since)."""
        runtime = self._by_name.get(sandbox.params.runtime)
        if runtime is None:
            raise SandboxNotActiveError(
                f"sandbox {sandbox.id} runs under {sandbox.params.runtime}, which this agent "
                "does not offer any more", details={"currentState": sandbox.status.value})
        return runtime

    def that_may_hold(self, sandbox: Sandbox | None) -> list[RuntimeDriver]:
        """The driver a sandbox was created with; every driver for one not known."""
        if sandbox is None:
            return list(self._by_name.values())
        runtime = self._by_name.get(sandbox.params.runtime)
        return [runtime] if runtime is not None else []
