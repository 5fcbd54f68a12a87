"""``qbox templates create-from-git``, and the options ``templates create --dockerfile`` shares.

WIRE_PROTOCOL.md §8.2: ``create-from-git URL --name [--ref main] [--dockerfile-path ""]
[--context-path .] [--build-arg K=V]* [--cpu 2] [--memory 2048] [--tag]* [--warm-state-*]
[--warm-state-timeout 20] [--enable-ssh] [--wait/--no-wait] [--wait-timeout 600]``. The build
log goes to stderr while it is waited for; a failed build exits 1, a wait that runs out 124
(the build goes on on the server).
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from qbox.cli.context import CliState, json_option, pass_state
from qbox.sdk import GitTemplateBuild, Template

GIT_WAIT_SECONDS = 600


def build_args(values: Sequence[str]) -> dict[str, str]:
    """``--build-arg K=V`` options (repeatable; a later K wins)."""
    args: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {value!r}", param_hint="--build-arg")
        args[key] = val
    return args


def build_arg_option(func: click.decorators.FC) -> click.decorators.FC:
    return click.option("--build-arg", "build_arg", multiple=True, metavar="K=V",
                        help="A build argument of the Dockerfile (repeatable).")(func)


@click.command("create-from-git")
@click.argument("url")
@click.option("--name", required=True, help="Template name (lowercase letters, digits, - and _); id tpl_NAME.")
@click.option("--ref", default="main", show_default=True, help="Branch, tag or commit to build.")
@click.option("--dockerfile-path", default="", metavar="PATH",
              help="The Dockerfile in the repository (default: found in --context-path).")
@click.option("--context-path", default=".", show_default=True, metavar="PATH",
              help="The build context: a directory of the repository.")
@build_arg_option
@click.option("--cpu", type=int, default=2, show_default=True, help="Default vCPUs of its sandboxes.")
@click.option("--memory", type=int, default=2048, show_default=True, help="Default memory (MiB) of its sandboxes.")
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable).")
@click.option("--warm-state-start-cmd", "--start-cmd", "start_cmd", metavar="CMD",
              help="Started in every new sandbox.")
@click.option("--warm-state-ready-cmd", "--ready-cmd", "ready_cmd", metavar="CMD",
              help="The sandbox is running once CMD exits 0.")
@click.option("--warm-state-timeout", "--ready-timeout", "ready_timeout", type=int, default=20,
              show_default=True, metavar="SECONDS", help="How long the ready command may take.")
@click.option("--enable-ssh", is_flag=True, help="Offer the ssh service.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait for the build, streaming its log to stderr.")
@click.option("--wait-timeout", type=float, default=GIT_WAIT_SECONDS, show_default=True, metavar="SECONDS",
              help="Give up waiting after this long (exit 124; the build goes on).")
@json_option
@pass_state
def create_from_git(state: CliState, url: str, name: str, ref: str, dockerfile_path: str, context_path: str,
                    build_arg: tuple[str, ...], cpu: int, memory: int, tags: tuple[str, ...],
                    start_cmd: str | None, ready_cmd: str | None, ready_timeout: int, enable_ssh: bool,
                    wait: bool, wait_timeout: float) -> None:
    """Build a template from the git repository at URL (public https), from its Dockerfile.

    When one of your templates was built from the same commit and inputs, it is reused at once
    (a cache hit). Prints the template's id (-o json: the template with cacheHit,
    resolvedCommitSha and buildKey).
    """
    build = Template.from_git(
        name, url, ref=ref, dockerfile_path=dockerfile_path, context_path=context_path,
        build_args=build_args(build_arg), default_vcpus=cpu, default_memory_mb=memory, tags=list(tags),
        start_cmd=start_cmd, ready_cmd=ready_cmd, ready_timeout_s=ready_timeout, enable_ssh=enable_ssh,
        wait=wait, on_log=state.env.err if wait else None, timeout=wait_timeout, config=state.config())
    show_git_build(state, build)


def show_git_build(state: CliState, build: GitTemplateBuild) -> None:
    if build.cache_hit:
        state.info(f"cache hit: {build.template_id} reuses the image of "
                   f"{build.template.built_from_template_id} (commit {build.resolved_commit_sha[:12]})")
    if state.explicit_format is None:
        state.env.out(build.template_id)
        return
    data = {**build.template.raw, "cacheHit": build.cache_hit,
            "resolvedCommitSha": build.resolved_commit_sha, "buildKey": build.build_key}
    if state.json:
        state.emit_json(data)
        return
    state.emit_fields([("ID", build.template_id), ("Name", build.template.name), ("Status", build.status),
                       ("Cache hit", build.cache_hit), ("Commit", build.resolved_commit_sha),
                       ("Build key", build.build_key), ("Build error", build.template.build_error)])
