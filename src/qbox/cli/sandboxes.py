"""``qbox sandboxes`` (alias ``sb``): create, list, inspect and end sandboxes; run commands."""

from __future__ import annotations

from typing import Any

import click

from qbox.cli import output
from qbox.cli.code import run_code
from qbox.cli.context import CliState, confirm_or_decline, json_option, pass_state
from qbox.cli.envs import envs
from qbox.cli.exit_codes import ExitCode, exit_code_for
from qbox.cli.files import files
from qbox.cli.ports import ports, spawn_ports
from qbox.cli.processes import command_output, kill_process, ps
from qbox.cli.sandbox_ref import parse_pairs, resolve_sandbox
from qbox.cli.shell import ssh
from qbox.cli.watch import watch as watch_list
from qbox.cli.watch import watch_options
from qbox.core.errors import QboxError
from qbox.core.states import TERMINAL_STATES
from qbox.sdk import LogEntry, Sandbox, SandboxInfo
from qbox.sdk._config import Clock

CREATE_WAIT_SECONDS = 120
SANDBOX_COLUMNS = ("ID", "NAME", "TEMPLATE", "STATUS", "CREATED")


def _row(info: SandboxInfo) -> list[Any]:
    return [info.id, info.name, info.template_id, info.status, info.created_at]


def _fields(info: SandboxInfo) -> list[tuple[str, Any]]:
    return [
        ("ID", info.id),
        ("Name", info.name),
        ("Template", info.template_id),
        ("Status", info.status),
        ("End reason", info.end_reason),
        ("Host", info.host_id),
        ("vCPUs", info.vcpus),
        ("Memory (MiB)", info.memory_mb),
        ("Disk (MiB)", info.disk_size_mb),
        ("Timeout (s)", info.timeout_seconds or "none"),
        ("Internet", info.allow_internet_access),
        ("From pool", info.from_pool),
        ("Services", [s.name for s in info.services]),
        ("Labels", info.labels),
        ("Created", info.created_at),
        ("Booted", info.booted_at),
        ("Ended", info.ended_at),
    ]


def _show(state: CliState, info: SandboxInfo) -> None:
    if state.json:
        state.emit_json(info.raw)
    else:
        state.emit_fields(_fields(info))


@click.group("sandboxes")
def sandboxes() -> None:
    """Create, list, inspect and end sandboxes; run commands in them."""


sandboxes.add_command(files)
sandboxes.add_command(ps)
sandboxes.add_command(kill_process)
sandboxes.add_command(run_code)
sandboxes.add_command(ssh)
sandboxes.add_command(ports)
sandboxes.add_command(envs)


@sandboxes.command("create")
@click.argument("template")
@click.option("--name", help="Set the name label (usable instead of the id).")
@click.option("--timeout", type=int, default=300, show_default=True, help="Auto-kill after N s (0: never).")
@click.option("-m", "--metadata", multiple=True, metavar="K=V", help="Add a label.")
@click.option("-e", "--env", "envs", multiple=True, metavar="K=V", help="Set an env variable.")
@click.option("-p", "--port", "port_specs", multiple=True, metavar="PORT[:VISIBILITY]",
              help="Expose a port (public unless private or signed_url); repeatable.")
@click.option("--cpu", type=int, help="vCPUs (default: the template's).")
@click.option("--memory", type=int, help="Memory in MiB (default: the template's).")
@click.option("--disk", type=int, help="Writable disk in MiB (default: the template's).")
@click.option("--internet/--no-internet", default=None, help="Allow egress (default: the template's).")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until running.")
@json_option
@pass_state
def create(
    state: CliState,
    template: str,
    name: str | None,
    timeout: int,
    metadata: tuple[str, ...],
    envs: tuple[str, ...],
    port_specs: tuple[str, ...],
    cpu: int | None,
    memory: int | None,
    disk: int | None,
    internet: bool | None,
    wait: bool,
) -> None:
    """Spawn a sandbox from TEMPLATE (a name or tpl_ id); print its id."""
    labels = parse_pairs(metadata, "--metadata")
    if name:
        labels["name"] = name
    sandbox = Sandbox.create(
        template,
        timeout=timeout,
        metadata=labels or None,
        envs=parse_pairs(envs, "--env") or None,
        vcpus=cpu,
        memory_mb=memory,
        disk_size_mb=disk,
        allow_internet_access=internet,
        ports=spawn_ports(port_specs) or None,
        wait_timeout=CREATE_WAIT_SECONDS if wait else None,
        config=state.config(),
    )
    sandbox.close()
    if state.explicit_format is None:
        state.env.out(sandbox.id)
    else:
        _show(state, sandbox.info)


def _labelled(found: list[SandboxInfo], labels: dict[str, str]) -> list[SandboxInfo]:
    return [s for s in found if all(s.labels.get(k) == v for k, v in labels.items())]


@sandboxes.command("list")
@click.option("-f", "--filter", "filters", multiple=True, metavar="K=V",
              help="Only sandboxes with this label (repeatable: all must match).")
@click.option("--state", "status", metavar="STATE", help="Only this state (default: running).")
@click.option("--template", help="Only this template (name or tpl_ id).")
@click.option("--limit", type=int, help="At most N sandboxes.")
@click.option("-a", "--all", "show_all", is_flag=True, help="Every state, ended ones too.")
@watch_options()
@json_option
@pass_state
def list_(state: CliState, filters: tuple[str, ...], status: str | None, template: str | None,
          limit: int | None, show_all: bool, watch: bool, watch_interval: float) -> None:
    """List sandboxes (running ones unless --all or --state)."""
    if status is None and not show_all:
        status = "running"
    config = state.config()
    labels = parse_pairs(filters, "--filter")

    def fetch() -> list[SandboxInfo]:
        return _labelled(Sandbox.list(status, template, limit, config=config), labels)

    if watch:
        watch_list(state, fetch, lambda s: s.raw, SANDBOX_COLUMNS, _row, noun="sandbox(es)",
                   interval=watch_interval)
        return
    found = fetch()
    state.emit([s.raw for s in found], SANDBOX_COLUMNS, [_row(s) for s in found])


@sandboxes.command("get")
@click.argument("sandbox")
@json_option
@pass_state
def get(state: CliState, sandbox: str) -> None:
    """Show one sandbox."""
    _show(state, Sandbox.get_info(resolve_sandbox(state, sandbox), config=state.config()))


@sandboxes.command("kill")
@click.argument("targets", nargs=-1, metavar="[SANDBOX]...")
@click.option("--where", multiple=True, metavar="K=V",
              help="Every running sandbox with this label (repeatable: all must match).")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_state
@click.pass_context
def kill(ctx: click.Context, state: CliState, targets: tuple[str, ...], where: tuple[str, ...],
         yes: bool) -> None:
    """End sandboxes, named or matched by --where (asks first unless -y or QBOX_ASSUME_YES=1)."""
    if where:
        if targets:
            raise click.UsageError("give sandboxes or --where, not both")
        matched = _labelled(Sandbox.list("running", config=state.config()), parse_pairs(where, "--where"))
        targets = tuple(s.id for s in matched)
        if not targets:
            state.env.err("no running sandbox matches")
            return
    elif not targets:
        raise click.UsageError("name the sandboxes to kill, or match them with --where K=V")
    label = targets[0] if len(targets) == 1 else f"{len(targets)} sandboxes ({', '.join(targets)})"
    confirm_or_decline(state, f"Kill {label}?", yes=yes, consequence="nothing killed")
    results: list[dict[str, Any]] = []
    first_failure = ExitCode.OK
    for target in targets:
        try:
            sandbox_id = resolve_sandbox(state, target)
            killed = Sandbox.kill_by_id(sandbox_id, config=state.config())
        except QboxError as error:
            code = exit_code_for(error)
            first_failure = first_failure or code
            results.append({"sandbox": target, **output.error_object(error, code)})
            if not state.json:
                state.env.err(f"{target}: {output.error_line(error)}")
            continue
        results.append({"sandbox": target, "id": sandbox_id, "killed": killed})
        if not state.json:
            state.env.out(f"killed {sandbox_id}" if killed else f"{sandbox_id} had already ended")
    if state.json:
        state.emit_json(results)
    ctx.exit(first_failure)


@sandboxes.command("logs")
@click.argument("sandbox")
@click.option("--tail", type=int, default=50, show_default=True, help="The last N entries.")
@click.option("--pid", type=int, help="Show this command's output instead.")
@click.option("-f", "--follow", is_flag=True,
              help="Keep printing new entries until the sandbox ends (with --pid: until the command ends).")
@click.option("--interval", type=click.FloatRange(min=0.2), default=2.0, show_default=True,
              help="With --follow: seconds between polls of the sandbox's log.")
@json_option
@pass_state
def logs(state: CliState, sandbox: str, tail: int, pid: int | None, follow: bool, interval: float) -> None:
    """Show a sandbox's lifecycle events and start-command output, or with --pid a command's output."""
    if pid is not None:
        command_output(state, sandbox, pid, follow)
        return
    sandbox_id = resolve_sandbox(state, sandbox)
    config = state.config()
    entries = Sandbox.logs(sandbox_id, tail=tail, config=config)
    if state.json and not follow:
        state.emit_json([e.raw for e in entries])
        return
    seen = _LogCursor()
    for entry in seen.new(entries):
        _print_entry(state, entry)
    if not follow:
        return
    clock = state.env.clock or Clock()
    try:
        # An ended sandbox's log no longer grows: one last poll, then stop.
        while Sandbox.get_info(sandbox_id, config=config).status not in TERMINAL_STATES:
            clock.sleep(interval)
            for entry in seen.new(Sandbox.logs(sandbox_id, tail=tail, config=config)):
                _print_entry(state, entry)
        for entry in seen.new(Sandbox.logs(sandbox_id, tail=tail, config=config)):
            _print_entry(state, entry)
    except KeyboardInterrupt:
        return


class _LogCursor:
    """Which entries of a log were printed: those up to the newest time seen, and among the
    entries at exactly that time, the ones already printed (a poll returns the last N again)."""

    def __init__(self) -> None:
        self._time = ""
        self._at_time: set[str] = set()

    def new(self, entries: list[LogEntry]) -> list[LogEntry]:
        fresh = []
        for entry in entries:
            when, key = str(entry.raw.get("time", "")), f"{entry.component}\0{entry.message}"
            if when < self._time or (when == self._time and key in self._at_time):
                continue
            if when > self._time:
                self._time, self._at_time = when, set()
            self._at_time.add(key)
            fresh.append(entry)
        return fresh


def _print_entry(state: CliState, entry: LogEntry) -> None:
    if state.json:
        state.env.out(output.to_json_line(entry.raw))
        return
    when = output.cell(entry.time) if entry.time else str(entry.raw.get("time", ""))[:19]
    state.env.out(f"{when}  {entry.level:<5} {entry.component:<16} {entry.message}")


@sandboxes.command("exec")
@click.argument("sandbox")
@click.argument("argv", nargs=-1, required=True, metavar="-- CMD [ARGS]...")
@click.option("-C", "--cwd", help="Working directory.")
@click.option("-e", "--env", "envs", multiple=True, metavar="K=V", help="Set an env variable.")
@click.option("--user", help="Run as this user.")
@click.option("--timeout", type=float, default=60, show_default=True, help="Kill after N s.")
@json_option
@pass_state
@click.pass_context
def exec_(
    ctx: click.Context,
    state: CliState,
    sandbox: str,
    argv: tuple[str, ...],
    cwd: str | None,
    envs: tuple[str, ...],
    user: str | None,
    timeout: float,
) -> None:
    """Run CMD in a sandbox; exit with its exit code.

    Its stdout and stderr stream to ours (with --json: one JSON object at the end).
    """
    env_vars = parse_pairs(envs, "--env") or None
    sb = Sandbox.connect(resolve_sandbox(state, sandbox), config=state.config())
    try:
        if state.explicit_format == "json":
            result = sb.commands.run_argv(
                argv, cwd=cwd, envs=env_vars, user=user, timeout=timeout, raise_on_error=False
            )
            state.emit_json({"exitCode": result.exit_code, "stdout": result.stdout, "stderr": result.stderr})
        else:
            result = sb.commands.run_argv(
                argv,
                cwd=cwd,
                envs=env_vars,
                user=user,
                timeout=timeout,
                raise_on_error=False,
                on_stdout=lambda text: state.env.out(text, nl=False),
                on_stderr=lambda text: state.env.err(text, nl=False),
            )
    finally:
        sb.close()
    ctx.exit(result.exit_code)
