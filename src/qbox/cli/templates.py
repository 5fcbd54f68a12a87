"""``qbox templates``: build templates from OCI images, inspect, rebuild and delete them.

A build's log goes to stderr as it is written, so ``--json`` output on stdout
stays clean. A build that fails exits 1; a wait that runs out exits 124 (the
build goes on on the server).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import click

from qbox.cli import template_sources
from qbox.cli.context import CliState, confirm_or_decline, json_option, pass_state
from qbox.cli.watch import watch as watch_list
from qbox.cli.watch import watch_options
from qbox.sdk import Step, Template, TemplateInfo, WarmPool, WarmPoolInfo

# WIRE_PROTOCOL.md §8.4: a `templates create` wait that ran out.
DEFAULT_WAIT_SECONDS = 300
TEMPLATE_USER = "user"  # the server's default account for a template
TEMPLATE_COLUMNS = ("ID", "NAME", "STATUS", "VCPUS", "MEMORY", "SIZE (MiB)", "POOL", "UPDATED")
# The options that become build steps, in the order they are given on the command line.
STEP_OPTIONS = ("run", "run_as_user", "env", "workdir", "copy")
_ORDER_KEY = "qbox.templates.option_order"
MODES: dict[str, Literal["lazy", "eager"]] = {"lazy": "lazy", "eager": "eager"}  # --code-interpreter


def _row(info: TemplateInfo) -> list[Any]:
    return [info.id, info.name, info.status, info.default_vcpus, info.default_memory_mb,
            info.size_bytes // (1024 * 1024), _pool_cell(info.warm_pool), info.updated_at]


def _pool_cell(pool: WarmPoolInfo) -> str:
    """ready/size, or "-" for a template without a pool."""
    return f"{pool.ready}/{pool.size}" if pool.size else "-"


def _pool_text(pool: WarmPoolInfo) -> str:
    kernels = "kernels started" if pool.eager else "kernels lazy"
    return (f"{pool.size} ({kernels}): {pool.ready} ready, {pool.booting} booting, {pool.claimed} claimed"
            if pool.size else f"none ({pool.claimed} claimed)" if pool.claimed else "none")


def _step_text(step: dict[str, Any]) -> str:
    if "run" in step:
        return f"run ({step.get('user') or 'root'}): {step['run']}"
    if "env" in step:
        return "env " + " ".join(f"{k}={v}" for k, v in dict(step["env"]).items())
    if "workdir" in step:
        return f"workdir {step['workdir']}"
    if "copy" in step:
        return f"copy {dict(step['copy']).get('path')}"
    return str(step)


def _show(state: CliState, info: TemplateInfo) -> None:
    if state.json:
        state.emit_json(info.raw)
        return
    state.emit_fields([
        ("ID", info.id), ("Name", info.name), ("Status", info.status),
        ("Build error", info.build_error), ("Image", info.image_ref), ("Digest", info.image_digest),
        ("Registry ref", info.registry_ref), ("Size (MiB)", info.size_bytes // (1024 * 1024)),
        ("vCPUs", info.default_vcpus), ("Memory (MiB)", info.default_memory_mb),
        ("Disk (MiB)", info.default_disk_mb), ("Runtime", info.runtime), ("Internet", info.allow_internet_access),
        ("SSH", info.enable_ssh), ("Public", info.public), ("Owner", info.owner_id),
        ("User", info.user), ("Workdir", info.workdir), ("Env", info.env), ("Host selector", info.host_selector),
        ("Code interpreter", info.code_interpreter), ("Warm pool", _pool_text(info.warm_pool)),
        ("Start cmd", info.start_cmd), ("Ready cmd", info.ready_cmd), ("Ready timeout (s)", info.ready_timeout_s),
        ("Steps", [f"{n}. {_step_text(s)}" for n, s in enumerate(info.steps, 1)]),
        ("Services", [s.name for s in info.services]), ("Tags", list(info.tags)),
        ("Created", info.created_at), ("Updated", info.updated_at),
    ])  # fmt: skip


def _print_created(state: CliState, info: TemplateInfo) -> None:
    """Like every ``create``: only the id unless an output format was asked for."""
    if state.explicit_format is None:
        state.env.out(info.id)
    else:
        _show(state, info)


class OrderedOptionsCommand(click.Command):
    """Records the order options were given in (``ctx.meta``), one entry per occurrence:
    click hands a ``multiple`` option all its values at once, losing how they interleave."""

    def make_parser(self, ctx: click.Context) -> Any:
        parser = super().make_parser(ctx)
        parse = parser.parse_args

        def parse_recording_order(args: list[str]) -> Any:
            opts, largs, order = parse(args=args)
            ctx.meta[_ORDER_KEY] = [param.name for param in order]
            return opts, largs, order

        setattr(parser, "parse_args", parse_recording_order)  # noqa: B010 - an instance override
        return parser


def _in_given_order(ctx: click.Context, values: Mapping[str, Sequence[Any]]) -> Iterator[tuple[str, Any]]:
    """``(option, value)`` pairs across several ``multiple`` options, in command-line order."""
    pending = {name: list(vals) for name, vals in values.items()}
    for name in ctx.meta.get(_ORDER_KEY, []):
        if pending.get(name):
            yield name, pending[name].pop(0)
    for name, left in pending.items():  # none, unless click was driven without its parser
        for value in left:
            yield name, value


def _pair(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"expected KEY=VALUE, got {value!r}", param_hint="--env")
    return key, val


def _selector(values: Sequence[str], hint: str) -> dict[str, str]:
    """LABEL=VALUE arguments as a host selector (the server checks the label grammar)."""
    selector: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected LABEL=VALUE, got {value!r}", param_hint=hint)
        selector[key] = val
    return selector


def _copy_step(spec: str) -> dict[str, Any]:
    local, sep, dest = spec.rpartition(":")
    if not sep or not local or not dest.startswith("/"):
        raise click.BadParameter(f"expected LOCAL:/ABSOLUTE/DEST, got {spec!r}", param_hint="--copy")
    try:
        data = Path(local).read_bytes()
        mode = os.stat(local).st_mode & 0o7777
    except OSError as exc:
        raise click.FileError(local, hint=exc.strerror or str(exc)) from exc
    try:
        content: str | bytes = data.decode("utf-8")
    except UnicodeDecodeError:
        content = data
    return Step.copy(dest, content, mode=mode)


def build_steps(ctx: click.Context, values: Mapping[str, Sequence[str]], run_user: str) -> list[dict[str, Any]]:
    """The build steps the step options describe, in command-line order (adjacent --env merged)."""
    makers: dict[str, Callable[[str], dict[str, Any]]] = {
        "run": Step.run,
        "run_as_user": lambda cmd: Step.run(cmd, user=run_user),
        "env": lambda kv: Step.env(dict([_pair(kv)])),
        "workdir": Step.workdir,
        "copy": _copy_step,
    }
    steps: list[dict[str, Any]] = []
    for name, value in _in_given_order(ctx, values):
        step = makers[name](value)
        if "env" in step and steps and "env" in steps[-1]:
            steps[-1]["env"].update(step["env"])
        else:
            steps.append(step)
    return steps


def _credentials(username: str | None, password_stdin: bool) -> tuple[str, str] | None:
    if username is None and not password_stdin:
        return None
    if username is None or not password_stdin:
        raise click.UsageError("--registry-username and --registry-password-stdin go together")
    password = sys.stdin.read().rstrip("\r\n")
    if not password:
        raise click.UsageError("--registry-password-stdin: nothing on stdin")
    return username, password


def _registry_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--registry-password-stdin", is_flag=True, help="Read the registry password from stdin (never stored)."
    )(func)
    return click.option("--registry-username", metavar="USER", help="Log in to the image's registry as USER.")(func)


def _wait_options(default_timeout: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        func = click.option(
            "--wait-timeout", type=float, default=default_timeout, show_default=True, metavar="SECONDS",
            help="Give up waiting after this long (exit 124; the build goes on).",
        )(func)  # fmt: skip
        return click.option(
            "--wait/--no-wait", default=True, show_default=True, help="Wait for the build, streaming its log to stderr."
        )(func)

    return decorate


@click.group("templates")
def templates() -> None:
    """Build templates from OCI images; list, inspect, rebuild and delete them."""


@templates.command("create", cls=OrderedOptionsCommand)
@click.option("--name", required=True, help="Template name (lowercase letters, digits, - and _); id tpl_NAME.")
@click.option("--image-ref", metavar="REF",
              help="Base image: python:3.12-slim, REGISTRY/REPO:TAG; admins also oci-archive:/p.tar, oci:DIR:TAG "
                   "inside the server's import dirs.")
@click.option("--dockerfile", type=click.Path(exists=True, dir_okay=False), metavar="PATH",
              help="Build from this Dockerfile instead of --image-ref (and steps).")
@click.option("--context", "context_dir", type=click.Path(exists=True, file_okay=False), metavar="DIR",
              help="With --dockerfile: the build context, uploaded (its .dockerignore honoured).")
@template_sources.build_arg_option
@click.option("--run", multiple=True, metavar="CMD", help="Build step: run CMD as root (/bin/sh -c).")
@click.option("--run-as-user", multiple=True, metavar="CMD", help="Build step: run CMD as the template's --user.")
@click.option("--env", multiple=True, metavar="K=V", help="Build step: set a variable for later steps and sandboxes.")
@click.option("--workdir", multiple=True, metavar="PATH",
              help="Build step: cwd of later steps (made if missing); the sandboxes' default cwd.")
@click.option("--copy", multiple=True, metavar="LOCAL:DEST", help="Build step: copy a local file into the image.")
@click.option("--user", metavar="NAME", help="Account sandbox commands run as (default: user).")
@click.option("--cpu", type=int, default=1, show_default=True, help="Default vCPUs of its sandboxes.")
@click.option("--memory", type=int, default=512, show_default=True, help="Default memory (MiB) of its sandboxes.")
@click.option("--disk", type=int, metavar="MB", help="Default writable disk (MiB) of its sandboxes.")
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable).")
@click.option("--start-cmd", "--warm-state-start-cmd", "start_cmd", metavar="CMD",
              help="Started in every new sandbox (its output goes to the sandbox log).")
@click.option("--ready-cmd", "--warm-state-ready-cmd", "ready_cmd", metavar="CMD",
              help="The sandbox is running once CMD exits 0 (tried every 0.5 s).")
@click.option("--ready-timeout", "--warm-state-timeout", "ready_timeout", type=int, default=30, show_default=True,
              metavar="SECONDS", help="How long --ready-cmd may take before the sandbox fails.")
@click.option("--enable-ssh", is_flag=True, help="Offer the ssh service.")
@click.option("--runtime", type=click.Choice(["crun", "runsc"]), help="OCI runtime of its sandboxes (default: crun).")
@click.option("--no-internet", is_flag=True, help="Its sandboxes get no internet access by default.")
@click.option("--public", is_flag=True, help="Every user may see and spawn it (admins only).")
@click.option("--host-selector", "host_selector", multiple=True, metavar="LABEL=VALUE",
              help="Run its sandboxes only on hosts with this label (repeatable; all must match).")
@click.option("--code-interpreter", type=click.Choice(list(MODES)),
              help="Start a sandbox's kernel on its first code call (lazy, the default) or at boot (eager).")
@click.option("--warm-pool", "warm_pool", type=click.IntRange(min=0), metavar="N",
              help="Keep N sandboxes booted for spawns to claim (admins only).")
@click.option("--warm-pool-eager/--no-warm-pool-eager", default=True, show_default=True,
              help="Start the pooled sandboxes' code interpreter too.")
@_registry_options
@_wait_options(DEFAULT_WAIT_SECONDS)
@json_option
@pass_state
@click.pass_context
def create(
    ctx: click.Context,
    state: CliState,
    name: str,
    image_ref: str | None,
    dockerfile: str | None,
    context_dir: str | None,
    build_arg: tuple[str, ...],
    run: tuple[str, ...],
    run_as_user: tuple[str, ...],
    env: tuple[str, ...],
    workdir: tuple[str, ...],
    copy: tuple[str, ...],
    user: str | None,
    cpu: int,
    memory: int,
    disk: int | None,
    tags: tuple[str, ...],
    start_cmd: str | None,
    ready_cmd: str | None,
    ready_timeout: int,
    enable_ssh: bool,
    runtime: str | None,
    no_internet: bool,
    public: bool,
    host_selector: tuple[str, ...],
    code_interpreter: str | None,
    warm_pool: int | None,
    warm_pool_eager: bool,
    registry_username: str | None,
    registry_password_stdin: bool,
    wait: bool,
    wait_timeout: float,
) -> None:
    """Build a template from an OCI image plus build steps, or from a Dockerfile.

    Steps run in the order given: --run, --run-as-user, --env, --workdir and
    --copy may be mixed and repeated. With --wait (the default) the build
    log streams to stderr; exit 1 if the build fails, 124 if the wait runs out.
    """
    values = {"run": run, "run_as_user": run_as_user, "env": env, "workdir": workdir, "copy": copy}
    if (image_ref is None) == (dockerfile is None):
        raise click.UsageError("give exactly one of --image-ref or --dockerfile")
    if dockerfile is None and (context_dir is not None or build_arg):
        raise click.UsageError("--context and --build-arg go with --dockerfile")
    if dockerfile is not None:
        if any(values.values()) or user:
            raise click.UsageError("build steps and --user go with --image-ref; a Dockerfile has its own")
        info = Template.from_dockerfile(
            name, Path(dockerfile), context=context_dir, build_args=template_sources.build_args(build_arg),
            default_vcpus=cpu, default_memory_mb=memory, default_disk_mb=disk, ready_timeout_s=ready_timeout,
            enable_ssh=enable_ssh, tags=list(tags), start_cmd=start_cmd, ready_cmd=ready_cmd,
            allow_internet_access=False if no_internet else None,
            registry_credentials=_credentials(registry_username, registry_password_stdin), wait=wait,
            on_log=state.env.err if wait else None, timeout=wait_timeout, config=state.config())
        _print_created(state, info)
        return
    assert image_ref is not None
    steps = build_steps(ctx, values, user or TEMPLATE_USER)
    credentials = _credentials(registry_username, registry_password_stdin)
    selector = _selector(host_selector, "--host-selector")
    # A wait that runs out raises TemplateBuildTimeoutError: exit 124 (exit_codes.py).
    info = Template.create(
        name, image_ref, steps=steps, start_cmd=start_cmd, ready_cmd=ready_cmd, ready_timeout_s=ready_timeout,
        default_vcpus=cpu, default_memory_mb=memory, default_disk_mb=disk, enable_ssh=enable_ssh,
        tags=list(tags), user=user, allow_internet_access=False if no_internet else None, runtime=runtime,
        registry_credentials=credentials, public=public, host_selector=selector,
        code_interpreter=None if code_interpreter is None else MODES[code_interpreter],
        warm_pool=None if warm_pool is None else WarmPool(warm_pool, eager=warm_pool_eager), wait=wait,
        on_log=state.env.err if wait else None, timeout=wait_timeout, config=state.config(),
    )  # fmt: skip
    _print_created(state, info)


@templates.command("set-public")
@click.argument("template")
@click.option("--private", is_flag=True, help="Make it private again: only its owner (and admins) see it.")
@json_option
@pass_state
def set_public(state: CliState, template: str, private: bool) -> None:
    """Let every user see and spawn TEMPLATE (a name or tpl_ id); admins only."""
    info = Template.set_public(template, not private, config=state.config())
    if state.json:
        state.emit_json(info.raw)
    else:
        state.env.out(f"{info.id} is {'public' if info.public else 'private'}")


@templates.command("set-host-selector")
@click.argument("template")
@click.argument("labels", nargs=-1, metavar="[LABEL=VALUE]...")
@json_option
@pass_state
def set_host_selector(state: CliState, template: str, labels: tuple[str, ...]) -> None:
    """Run TEMPLATE's new sandboxes only on hosts carrying every LABEL=VALUE (none: on any host)."""
    info = Template.set_host_selector(template, _selector(labels, "LABEL=VALUE"), config=state.config())
    if state.json:
        state.emit_json(info.raw)
    else:
        shown = ",".join(f"{k}={v}" for k, v in sorted(info.host_selector.items()))
        state.env.out(f"{info.id} runs on {'hosts with ' + shown if shown else 'any host'}")


@templates.command("pool")
@click.argument("template")
@click.option("--size", type=click.IntRange(min=0), metavar="N",
              help="Keep N sandboxes booted for spawns to claim (0: none; above 0 admins only).")
@click.option("--eager/--no-eager", default=None, help="Start the pooled sandboxes' code interpreter too.")
@click.option("--code-interpreter", type=click.Choice(list(MODES)),
              help="When its new sandboxes start their kernel: first code call (lazy) or boot (eager).")
@json_option
@pass_state
def pool(state: CliState, template: str, size: int | None, eager: bool | None, code_interpreter: str | None) -> None:
    """Show or change TEMPLATE's warm pool (a name or tpl_ id); what is left out stays."""
    config = state.config()
    info: TemplateInfo | None = None
    if code_interpreter is not None:
        info = Template.set_code_interpreter(template, MODES[code_interpreter], config=config)
    if size is not None or eager is not None:
        info = Template.set_warm_pool(template, size, eager=eager, config=config)
    if info is None:
        info = Template.get(template, config=config)
    if state.json:
        state.emit_json(info.raw)
    else:
        state.env.out(f"{info.id} warm pool: {_pool_text(info.warm_pool)}; code interpreter {info.code_interpreter}")


@templates.command("list")
@click.option("--service", help="Only templates offering this service type (e.g. code-interpreter).")
@click.option("--status", type=click.Choice(["building", "ready", "failed"]), help="Only templates in this status.")
@watch_options()
@json_option
@pass_state
def list_(state: CliState, service: str | None, status: str | None, watch: bool, watch_interval: float) -> None:
    """List templates."""
    config = state.config()

    def fetch() -> list[TemplateInfo]:
        found = Template.list(service=service, config=config)
        return [t for t in found if status is None or t.status == status]

    if watch:
        watch_list(state, fetch, lambda t: t.raw, TEMPLATE_COLUMNS, _row, noun="template(s)", interval=watch_interval)
        return
    found = fetch()
    state.emit([t.raw for t in found], TEMPLATE_COLUMNS, [_row(t) for t in found])


@templates.command("get")
@click.argument("template")
@json_option
@pass_state
def get(state: CliState, template: str) -> None:
    """Show TEMPLATE (a name or tpl_ id)."""
    _show(state, Template.get(template, config=state.config()))


@templates.command("logs")
@click.argument("template")
@click.option("-f", "--follow", is_flag=True, help="Keep printing lines until the build ends.")
@pass_state
def logs(state: CliState, template: str, follow: bool) -> None:
    """Print the build log of TEMPLATE (a name or tpl_ id)."""
    if follow:
        for line in Template.follow_build_log(template, config=state.config()):
            state.env.out(line)
        return
    text = Template.build_log(template, config=state.config())
    if text:
        state.env.out(text, nl=not text.endswith("\n"))


@templates.command("rebuild")
@click.argument("template")
@_registry_options
@_wait_options(DEFAULT_WAIT_SECONDS)
@json_option
@pass_state
def rebuild(
    state: CliState,
    template: str,
    registry_username: str | None,
    registry_password_stdin: bool,
    wait: bool,
    wait_timeout: float,
) -> None:
    """Build TEMPLATE again from its image ref (pulled afresh) and steps."""
    credentials = _credentials(registry_username, registry_password_stdin)
    info = Template.rebuild(
        template, registry_credentials=credentials, wait=wait, on_log=state.env.err if wait else None,
        timeout=wait_timeout, config=state.config(),
    )  # fmt: skip
    _print_created(state, info)


@templates.command("delete")
@click.argument("template")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_state
def delete(state: CliState, template: str, yes: bool) -> None:
    """Delete TEMPLATE (refused while sandboxes use it)."""
    confirm_or_decline(state, f"Delete template {template}?", yes=yes, consequence="nothing deleted")
    Template.delete(template, config=state.config())
    if state.json:
        state.emit_json({"template": template, "deleted": True})
    else:
        state.env.out(f"deleted {template}")


templates.add_command(template_sources.create_from_git)
