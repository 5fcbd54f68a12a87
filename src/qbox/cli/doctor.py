"""``qbox doctor``: is this deployment usable, end to end? One line per check, ✓ or ✗ and why.

The probe sequence is the published CLI's (WIRE_PROTOCOL.md §8.5): the control
plane answers and says its version; the key is recognised; hosts are
registered and one accepts sandboxes; a template is ready; a test sandbox
spawns (``?wait=true``), runs ``1+1`` when it offers a code interpreter, and is
deleted again. Between hosts and templates come qbox's own checks, from what
``GET /v1/hosts`` and ``GET /v1/system`` tell: every host's agent is
heartbeating, every host that takes sandboxes has a runtime (and which), and
built templates reach every host (a registry, once there is more than one).
Exit 0 when no check failed, else 1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import click

from qbox.cli.context import CliState, json_option, pass_state
from qbox.core.errors import PermissionDeniedError, QboxError
from qbox.core.timefmt import utcnow
from qbox.sdk import ConnectionConfig, Host, Hosts, Sandbox, System, Template
from qbox.sdk._config import Clock

SKIPPABLE = ("hosts", "templates", "spawn")
ACCEPTING = frozenset({"online", "ready"})  # "online" is the published platform's word
HEARTBEATING = frozenset({"ready", "draining"})
SPAWN_TIMEOUT_SECONDS = 120  # the test sandbox's own auto-kill, should deleting it fail
SPAWN_WAIT_SECONDS = 60


@dataclass
class Check:
    name: str
    ok: bool | None  # None: skipped
    detail: str = ""
    hint: str = ""

    def line(self) -> str:
        mark = "-" if self.ok is None else "✓" if self.ok else "✗"
        text = f"  {mark} {self.name}" + (f"  ({self.detail})" if self.detail else "")
        return text + (f"\n      hint: {self.hint}" if self.ok is False and self.hint else "")


def _ago(host: Host) -> str:
    if host.last_heartbeat_at is None:
        return "never heard from"
    seconds = max(0, int((utcnow() - host.last_heartbeat_at).total_seconds()))
    return f"last heartbeat {seconds} s ago"


class Doctor:
    def __init__(self, state: CliState, config: ConnectionConfig) -> None:
        self.state = state
        self.config = config
        self.clock = config.clock or Clock()
        self.checks: list[Check] = []
        self.registry_configured: bool | None = None

    def add(self, name: str, ok: bool | None, detail: str = "", hint: str = "") -> None:
        self.checks.append(Check(name, ok, detail, hint))

    def run(self, skip: set[str], spawn: bool) -> None:
        if not self.control_plane() or not self.api_key():
            return
        hosts = None if "hosts" in skip else self.hosts()
        ready_template = None if "templates" in skip else self.templates()
        if hosts is not None:
            self.agents(hosts)
            self.runtimes(hosts)
            self.registry(hosts)
        if not spawn or "spawn" in skip:
            self.add("test sandbox spawn", None, "skipped")
        elif ready_template is None:
            self.add("test sandbox spawn", None, "skipped (no ready template)")
        else:
            self.spawn(ready_template)

    def control_plane(self) -> bool:
        try:
            info = System.info(config=self.config)
        except QboxError as error:
            self.add("control plane reachable", False, error.message, "check --base-url, QBOX_BASE_URL, the network")
            return False
        self.add("control plane reachable", True, self.config.base_url or "")
        self.add("control plane version", bool(info.version), info.version or "no version in the answer")
        flag = info.raw.get("registryConfigured")
        self.registry_configured = flag if isinstance(flag, bool) else None
        return True

    def api_key(self) -> bool:
        if not self.config.api_key:
            self.add("api key recognized", False, "no API key", "run `qbox auth login`, or set QBOX_API_KEY")
            return False
        try:
            identity = System.me(config=self.config)
        except QboxError as error:
            self.add("api key recognized", False, error.message, "run `qbox auth login` with a valid key")
            return False
        self.add("api key recognized", True, f"scopes: {', '.join(identity.scopes) or '-'}")
        return True

    def hosts(self) -> list[Host] | None:
        try:
            hosts = Hosts.list(config=self.config)
        except PermissionDeniedError:
            self.add("hosts registered", None, "skipped: this key may not read hosts (hosts:read)")
            return None
        except QboxError as error:
            self.add("hosts registered", False, error.message)
            return None
        accepting = [h for h in hosts if h.status in ACCEPTING]
        self.add("hosts registered", bool(hosts), f"{len(hosts)} host(s)", "start an agent: `qbox agent --join …`")
        self.add("a host accepting sandboxes", bool(accepting), f"{len(accepting)} ready",
                 "see `qbox hosts list`: uncordon a drained host or restart a down one's agent")
        return hosts

    def agents(self, hosts: list[Host]) -> None:
        silent = [h for h in hosts if h.status not in HEARTBEATING]
        if silent:
            detail = "; ".join(f"{h.hostname or h.id} {h.status}, {_ago(h)}" for h in silent)
            self.add("host agents reachable", False, detail, "check that `qbox agent` runs there and reaches us")
        elif hosts:
            oldest = min(hosts, key=lambda h: h.last_heartbeat_at or utcnow())
            self.add("host agents reachable", True, f"{len(hosts)} heartbeating; the oldest: {_ago(oldest)}")
        else:
            self.add("host agents reachable", False, "no hosts")

    def runtimes(self, hosts: list[Host]) -> None:
        accepting = [h for h in hosts if h.status in ACCEPTING]
        without = [h for h in accepting if not h.runtimes]
        if not accepting:
            self.add("runtime", None, "skipped (no host accepts sandboxes)")
            return
        found = sorted({r for h in accepting for r in h.runtimes})
        gvisor = sum("runsc" in h.runtimes for h in accepting)
        detail = f"{', '.join(found) or 'none'}; gVisor (runsc) on {gvisor} of {len(accepting)} host(s)"
        if without:
            detail = f"no runtime on {', '.join(h.hostname or h.id for h in without)}; " + detail
        self.add("runtime", not without, detail, "install crun (and runsc for gVisor): scripts/setup.sh")

    def registry(self, hosts: list[Host]) -> None:
        if self.registry_configured is None:
            self.add("registry", None, "skipped (the server does not say whether it has one)")
        elif self.registry_configured:
            self.add("registry", True, "built templates are pushed to it, so every host can pull them")
        elif len(hosts) > 1:
            self.add("registry", False, f"none configured, {len(hosts)} hosts: a built template runs only where it "
                     "was built", "set QBOX_REGISTRY on the control plane (docs/operations.md)")
        else:
            self.add("registry", True, "none configured; not needed with one host")

    def templates(self) -> str | None:
        try:
            found = Template.list(config=self.config)
        except QboxError as error:
            self.add("a template is ready", False, error.message)
            return None
        ready = [t for t in found if t.status == "ready"]
        self.add("a template is ready", bool(ready), f"{len(ready)} ready", "build one: `qbox templates create …`")
        return ready[0].id if ready else None

    def spawn(self, template_id: str) -> None:
        started = self.clock.now()
        sandbox_id: str | None = None
        try:
            sandbox = Sandbox.create(template_id, timeout=SPAWN_TIMEOUT_SECONDS, wait_timeout=SPAWN_WAIT_SECONDS,
                                     config=self.config)
        except QboxError as error:
            details = error.details if isinstance(error.details, dict) else {}
            sandbox_id = details.get("sandboxId") if isinstance(details.get("sandboxId"), str) else None
            self.add("test sandbox spawn", False, error.message)
        else:
            sandbox_id = sandbox.id
            self.add("test sandbox spawn", True, f"{sandbox.id} in {self.clock.now() - started:.1f} s")
            try:
                if any(s.type == "code-interpreter" for s in sandbox.info.services):
                    self.code(sandbox)
            finally:
                sandbox.close()
        if sandbox_id is not None:
            try:
                Sandbox.kill_by_id(sandbox_id, config=self.config)
                self.add("test sandbox kill", True)
            except QboxError as error:
                self.add("test sandbox kill", False, error.message, f"end it with `qbox sandboxes kill {sandbox_id}`")

    def code(self, sandbox: Sandbox) -> None:
        try:
            execution = sandbox.run_code("1+1", language="python")
        except QboxError as error:
            self.add("test code execution", False, error.message)
            return
        if execution.error is not None:
            self.add("test code execution", False, f"{execution.error.name}: {execution.error.value}")
            return
        self.add("test code execution", True, f"1+1 = {execution.text}")

    def report(self) -> dict[str, Any]:
        return {"ok": self.failed == 0, "baseUrl": self.config.base_url,
                "checks": [asdict(c) for c in self.checks]}

    @property
    def failed(self) -> int:
        return sum(c.ok is False for c in self.checks)


@click.command("doctor")
@click.option("--quick", is_flag=True, help="No test sandbox.")
@click.option("--no-spawn", is_flag=True, help="No test sandbox (same as --quick).")
@click.option("--skip", multiple=True, type=click.Choice(SKIPPABLE), help="Skip these checks (repeatable).")
@json_option
@pass_state
@click.pass_context
def doctor(ctx: click.Context, state: CliState, quick: bool, no_spawn: bool, skip: tuple[str, ...]) -> None:
    """Check the control plane, the key, hosts, agents, runtimes, the registry, templates and a test spawn."""
    config = state.config()
    doc = Doctor(state, replace(config, max_retries=min(config.max_retries or 0, 1)))
    if not state.json:
        state.env.out(f"Checking {config.base_url} (profile {state.profile_name})…")
    doc.run(set(skip), spawn=not (quick or no_spawn))
    if state.json:
        state.emit_json(doc.report())
    else:
        for check in doc.checks:
            state.env.out(check.line())
        state.env.out("all checks passed." if doc.failed == 0 else f"{doc.failed} check(s) failed.")
    ctx.exit(0 if doc.failed == 0 else 1)
