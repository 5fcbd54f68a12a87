"""The code interpreter of each sandbox: its kernel host, its contexts, its executions.

``CodeInterpreter`` is one sandbox's: it starts the kernel host in the
sandbox on first use (and again after the host died), creates a default
context per language when one is first asked for, and turns an execution
into the wire's CodeEvents. ``CodeInterpreters`` holds them by sandbox; the
sandbox manager attaches one when a sandbox boots (or is found again after
an agent restart) and detaches it on delete. An eager sandbox's default
context is warmed up in the background at attach; a lazy one (the default)
starts nothing until its first code call, so an idle sandbox costs no kernel.

A claim (a pooled sandbox handed to a request) replaces the sandbox's envs: a
kernel host spawned before it still has the boot envs, so its kernels get the
new ones with every execution and start (``replace_env``).

Waits a client can see are bounded: a host or kernel that is still starting
after ``ready_wait`` seconds answers ``code_interpreter_unavailable``
(transient) while the start goes on, so the retry finds it ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from qbox.agent.images.kernelspecs import KernelSpecInfo, find_kernelspecs
from qbox.agent.interpreter.contexts import Context, new_context_id
from qbox.agent.interpreter.events import FAIL_NAMES, CodeEvent, code_events
from qbox.agent.interpreter.host import HostGone, HostRequestFailed, KernelHost
from qbox.agent.interpreter.languages import Language, languages_of, resolve, specs_from_host
from qbox.agent.runtime.base import ProcessHandle
from qbox.core.errors import (
    CodeInterpreterDisabledError,
    CodeInterpreterUnavailableError,
    ConflictError,
    ContextNotFoundError,
    InvalidArgumentError,
    LanguageNotSupportedError,
    UnavailableError,
    ValidationError,
)
from qbox.core.timefmt import utcnow

log = logging.getLogger("qbox.agent.interpreter")

# The guest scripts, bind-mounted read-only at /.qbox/guest in every sandbox (spec.py).
GUEST_SOURCE = Path(__file__).resolve().parent / "guest"
HOST_ARGV = ("python3", "/.qbox/guest/kernel_host.py")
DEFAULT_CWD = "/home/user"
READY_WAIT_SECONDS = 10.0
# A restart is asked for explicitly: the client waits for the kernel longer.
RESTART_WAIT_SECONDS = 60.0
HOST_READY_TIMEOUT_SECONDS = 120.0
STOP_WAIT_SECONDS = 10.0

# The names the kernel host takes in a request's env (docs/kernel-host-protocol.md).
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

SpawnHost = Callable[[list[str]], Awaitable[ProcessHandle]]


class CodeRun:
    """One execution's CodeEvents; ``cancel`` (also what ``aclose`` does) leaves it, and
    unless it has completed the kernel host interrupts the kernel."""

    def __init__(self, events: AsyncGenerator[CodeEvent, None], cancel: Callable[[], None]) -> None:
        self._events = events
        self.cancel = cancel

    def __aiter__(self) -> AsyncIterator[CodeEvent]:
        return self._events

    async def aclose(self) -> None:
        await self._events.aclose()
        self.cancel()


class CodeInterpreter:
    """One sandbox's kernels."""

    def __init__(self, sandbox_id: str, spawn: SpawnHost, find_specs: Callable[[], Awaitable[
                 list[KernelSpecInfo]]], *, host_argv: tuple[str, ...] = HOST_ARGV,
                 ready_wait: float = READY_WAIT_SECONDS) -> None:
        self.sandbox_id = sandbox_id
        self._spawn = spawn
        self._host_argv = list(host_argv)
        self._ready_wait = ready_wait
        self._find_specs = find_specs
        self._languages: list[Language] = []
        self._scan: asyncio.Task[None] | None = None
        self._host: KernelHost | None = None
        self._host_start: asyncio.Task[KernelHost] | None = None
        self._contexts: dict[str, Context] = {}
        self._defaults: dict[str, str] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self.warming: asyncio.Task[None] | None = None
        # The envs a claim set, and which version of them the current host was spawned
        # with (0: the boot's); an older host's kernels get them with every request.
        self._claimed_env: dict[str, str] = {}
        self._env_version = 0
        self._host_env_version = 0

    def _background(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        # Failures reach whoever awaits; unawaited ones must not warn at exit.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return task

    def _spawn_task(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = self._background(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _find(self) -> None:
        try:
            found = languages_of(await self._find_specs())
        except Exception:  # noqa: BLE001 - an unreadable rootfs just has no kernels
            log.warning("%s: cannot read the kernelspecs", self.sandbox_id, exc_info=True)
            return
        if not self._languages:  # the host's own report, when it came first, wins
            self._languages = found

    # --- languages ----------------------------------------------------------------

    async def languages(self) -> list[Language]:
        # Looked for again while there are none: a kernel installed in the
        # running sandbox (pip install ipykernel) turns the interpreter on.
        if not self._languages and (self._scan is None or self._scan.done()):
            self._scan = self._background(self._find())
        if self._scan is not None and not self._scan.done():
            await asyncio.shield(self._scan)
        return list(self._languages)

    async def require_enabled(self) -> list[Language]:
        languages = await self.languages()
        if not languages:
            raise CodeInterpreterDisabledError(
                f"sandbox {self.sandbox_id}'s template has no Jupyter kernels",
                details={"sandboxId": self.sandbox_id, "feature": "code-interpreter"})
        return languages

    def warm_up(self) -> asyncio.Task[None]:
        """Start the host and the default context in the background (a boot with kernels);
        the task ends when the default context is up (or could not start)."""
        task: asyncio.Task[None] = self._background(self._warm())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self.warming = task
        return task

    async def _warm(self) -> None:
        languages = await self.languages()
        if not languages or self._closed:
            return
        context = self._default_context(resolve(languages, None))
        with contextlib.suppress(Exception):
            await asyncio.shield(context.started)  # type: ignore[arg-type]

    # --- the host -----------------------------------------------------------------

    async def _ready_host(self) -> KernelHost:
        if self._host is not None and self._host.alive:
            return self._host
        if self._closed:
            raise HostGone("the sandbox's code interpreter is shut down")
        if self._host_start is None or self._host_start.done():
            self._host_start = self._background(self._start_host())
        return await asyncio.shield(self._host_start)

    async def _start_host(self) -> KernelHost:
        # The spawn reads the sandbox's envs as it starts: the version they have now.
        env_version = self._env_version
        host = await KernelHost.start(functools.partial(self._spawn, self._host_argv),
                                      name=self.sandbox_id)
        try:
            kernels = await asyncio.wait_for(asyncio.shield(host.ready),
                                             HOST_READY_TIMEOUT_SECONDS)
        except BaseException:
            await host.close(grace=0)
            raise
        reported = languages_of(specs_from_host(kernels))
        if reported:  # the host sees what jupyter_client sees (user-installed kernels too)
            self._languages = reported
        self._host = host
        self._host_env_version = env_version
        self._spawn_task(self._watch_host(host))
        return host

    def replace_env(self, env: dict[str, str]) -> None:
        """The sandbox's envs from now on (a claim): hosts spawned later have them already,
        kernels of the running host get them merged under each request's own (those whose
        names a shell can set: the host refuses others)."""
        self._claimed_env = {k: v for k, v in env.items() if _ENV_NAME.fullmatch(k)}
        self._env_version += 1

    def _host_env(self, host: KernelHost | None) -> dict[str, str]:
        """What ``host``'s kernels lack of the sandbox's envs: the claimed envs, for a host
        spawned before the claim."""
        if host is not None and host is self._host and self._host_env_version < self._env_version:
            return self._claimed_env
        return {}

    async def _watch_host(self, host: KernelHost) -> None:
        await host.exited.wait()
        reason = str(HostGone("the kernel host exited"))
        for context in self._contexts.values():
            if context.host is host and context.dead_reason is None:
                context.dead_reason = reason

    # --- contexts -----------------------------------------------------------------

    def _default_context(self, language: Language) -> Context:
        context = self._contexts.get(self._defaults.get(language.language, ""))
        if context is None:
            context = self._new_context(language, DEFAULT_CWD, is_default=True)
            self._defaults[language.language] = context.id
        elif context.dead_reason is not None and context.started is not None \
                and context.started.done():
            # Asked for by language, the default context just comes back (its
            # death was reported to the execution it ended).
            context.started = self._background(self._start_kernel(context, restart=True))
        return context

    def _new_context(self, language: Language, cwd: str, *, is_default: bool) -> Context:
        context = Context(new_context_id(), language.language, language.kernel_name, cwd,
                          is_default)
        self._contexts[context.id] = context
        context.started = self._background(self._start_kernel(context, restart=False))
        return context

    async def _start_kernel(self, context: Context, *, restart: bool) -> None:
        context.generation += 1
        try:
            host = await self._ready_host()
            if restart and context.host is host:
                try:
                    await host.request("restart", context=context.id)
                except HostRequestFailed as exc:
                    if exc.code != "context_not_found":
                        raise
                    await host.request("start", context=context.id,
                                       kernel=context.kernel_name, cwd=context.cwd,
                                       **self._start_env(host))
            else:
                await host.request("start", context=context.id, kernel=context.kernel_name,
                                   cwd=context.cwd, **self._start_env(host))
        except BaseException as exc:
            context.dead_reason = f"the kernel did not start: {exc}"
            # A context whose kernel never started is forgotten (restarts keep theirs).
            if not restart and self._contexts.get(context.id) is context:
                del self._contexts[context.id]
                if self._defaults.get(context.language) == context.id:
                    del self._defaults[context.language]
            raise
        context.host = host
        context.dead_reason = None

    def _start_env(self, host: KernelHost) -> dict[str, Any]:
        env = self._host_env(host)
        return {"env": env} if env else {}

    async def _started(self, context: Context, wait: float) -> None:
        assert context.started is not None
        try:
            await asyncio.wait_for(asyncio.shield(context.started), wait)
        except TimeoutError:
            raise CodeInterpreterUnavailableError(
                f"the {context.language} kernel of sandbox {self.sandbox_id} is still starting",
                details={"contextId": context.id, "sandboxId": self.sandbox_id}) from None
        except HostGone as exc:
            raise CodeInterpreterUnavailableError(
                f"the code interpreter of sandbox {self.sandbox_id} cannot start: {exc}",
                details={"sandboxId": self.sandbox_id}) from None
        except HostRequestFailed as exc:
            if exc.code == "language_not_supported":
                raise LanguageNotSupportedError(
                    exc.message, details={"language": context.language,
                                          "supportedLanguages": [
                                              lang.language for lang in self._languages]}
                ) from None
            raise UnavailableError(f"the {context.language} kernel failed to start: "
                                   f"{exc.message}", code="kernel_start_failed") from None

    def _get(self, context_id: str) -> Context:
        context = self._contexts.get(context_id)
        if context is None:
            raise ContextNotFoundError(f"no context {context_id} in sandbox {self.sandbox_id}",
                                       details={"contextId": context_id})
        return context

    async def contexts(self) -> list[Context]:
        await self.require_enabled()
        return sorted(self._contexts.values(), key=lambda c: c.created_at)

    async def create_context(self, language: str | None, cwd: str | None) -> Context:
        chosen = resolve(await self.require_enabled(), language)
        if cwd is not None and (not cwd.startswith("/") or "\0" in cwd):
            raise ValidationError.for_fields({"cwd": "cwd must be an absolute path"})
        context = self._new_context(chosen, cwd or DEFAULT_CWD, is_default=False)
        try:
            await self._started(context, self._ready_wait)
        except CodeInterpreterUnavailableError:
            if context.started is not None and context.started.done():
                raise  # the host could not start: the context is gone
            # Still starting: the context exists, executions on it wait for it.
        return context

    async def restart_context(self, context_id: str) -> Context:
        await self.require_enabled()
        context = self._get(context_id)
        if context.started is not None and not context.started.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(context.started), RESTART_WAIT_SECONDS)
        context.started = self._background(self._start_kernel(context, restart=True))
        await self._started(context, RESTART_WAIT_SECONDS)
        return context

    async def delete_context(self, context_id: str) -> None:
        await self.require_enabled()
        context = self._contexts.pop(context_id, None)
        if context is None:
            raise ContextNotFoundError(f"no context {context_id} in sandbox {self.sandbox_id}",
                                       details={"contextId": context_id})
        if self._defaults.get(context.language) == context_id:
            del self._defaults[context.language]
        stop = self._background(self._stop_kernel(context))
        # Past the wait it goes on in the background: the host forgets the kernel later.
        self._tasks.add(stop)
        stop.add_done_callback(self._tasks.discard)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(stop), STOP_WAIT_SECONDS)

    async def _stop_kernel(self, context: Context) -> None:
        if context.started is not None:
            with contextlib.suppress(Exception):
                await context.started
        host = context.host
        if host is None or not host.alive:
            return
        with contextlib.suppress(HostGone, HostRequestFailed):
            await host.request("stop", context=context.id)

    # --- executions ---------------------------------------------------------------

    async def context_for(self, context_id: str | None, language: str | None) -> Context:
        """The context an execution runs in, started (within the bounded wait) and alive."""
        languages = await self.require_enabled()
        if context_id and language:
            raise InvalidArgumentError("give contextId or language, not both")
        if context_id:
            context = self._get(context_id)
        else:
            context = self._default_context(resolve(languages, language))
        await self._started(context, self._ready_wait)
        if context.dead_reason is not None or context.host is None or not context.host.alive:
            raise ConflictError(
                f"context {context.id} is dead ({context.dead_reason or 'its kernel is gone'}); "
                f"restart it (POST …/code/contexts/{context.id}/restart)",
                details={"contextId": context.id})
        return context

    async def execute(self, context: Context, code: str, *, env: dict[str, str] | None = None,
                      timeout: float | None = None) -> CodeRun:
        """Send the execution; iterating yields its CodeEvents, ``complete`` last. Closing it
        (or ``cancel``) before ``complete`` interrupts the kernel: the cell stops, the
        context stays."""
        host = context.host
        if host is None:
            raise ConflictError(f"context {context.id} has no kernel; restart it")
        fields: dict[str, Any] = {"context": context.id, "code": code}
        if timeout is not None:
            fields["timeout"] = timeout
        env = {**self._host_env(host), **(env or {})}
        if env:
            fields["env"] = env
        began = time.monotonic()
        context.running += 1
        context.last_used_at = utcnow()
        ended = functools.partial(self._execution_ended, context, context.generation)
        try:
            events = await host.stream("execute", on_final=ended, **fields)
        except HostGone as exc:
            ended(exc)
            raise CodeInterpreterUnavailableError(
                f"the kernel host of sandbox {self.sandbox_id} exited: {exc}") from None
        return CodeRun(code_events(context, events, began), events.cancel)

    def _execution_ended(self, context: Context, generation: int,
                         final: dict[str, Any] | HostGone) -> None:
        context.running = max(0, context.running - 1)
        if generation != context.generation:
            return  # about a kernel since restarted
        if isinstance(final, HostGone):
            context.dead_reason = str(final)
        elif final.get("event") == "done" and final.get("kernelDied") is True:
            context.dead_reason = "its kernel died"
        elif final.get("event") == "fail" and final.get("code") in FAIL_NAMES:
            context.dead_reason = str(final.get("message") or final.get("code"))

    # --- shutdown -----------------------------------------------------------------

    async def close(self) -> None:
        """Stop everything of this sandbox's interpreter (delete, agent shutdown)."""
        self._closed = True
        tasks = [*self._tasks, *([self._scan] if self._scan is not None else []),
                 *(c.started for c in self._contexts.values() if c.started is not None)]
        if self._host_start is not None:
            tasks.append(self._host_start)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        host = self._host
        if host is None and self._host_start is not None and self._host_start.done() \
                and not self._host_start.cancelled() and self._host_start.exception() is None:
            host = self._host_start.result()
        if host is not None:
            await host.close()
        for context in self._contexts.values():
            context.dead_reason = context.dead_reason or "the sandbox's interpreter is shut down"


class CodeInterpreters:
    """The code interpreters of this host's sandboxes, by sandbox id."""

    def __init__(self, *, host_argv: tuple[str, ...] | None = None,
                 ready_wait: float = READY_WAIT_SECONDS) -> None:
        # Tests replace the argv (the fake runtime runs it on the host).
        self.host_argv = host_argv or HOST_ARGV
        self.ready_wait = ready_wait
        self._by_sandbox: dict[str, CodeInterpreter] = {}

    def attach(self, sandbox_id: str, rootfs: Path, spawn: SpawnHost, *,
               eager: bool = False) -> CodeInterpreter:
        """A booted (or found again) sandbox; ``eager``: its default context starts now, in
        the background (otherwise on the first code call)."""
        interpreter = CodeInterpreter(
            sandbox_id, spawn, lambda: asyncio.to_thread(find_kernelspecs, rootfs),
            host_argv=self.host_argv, ready_wait=self.ready_wait)
        self._by_sandbox[sandbox_id] = interpreter
        if eager:
            interpreter.warm_up()
        return interpreter

    def find(self, sandbox_id: str) -> CodeInterpreter | None:
        return self._by_sandbox.get(sandbox_id)

    def get(self, sandbox_id: str) -> CodeInterpreter:
        interpreter = self._by_sandbox.get(sandbox_id)
        if interpreter is None:
            raise CodeInterpreterDisabledError(
                f"sandbox {sandbox_id} has no code interpreter",
                details={"sandboxId": sandbox_id})
        return interpreter

    async def detach(self, sandbox_id: str) -> None:
        interpreter = self._by_sandbox.pop(sandbox_id, None)
        if interpreter is not None:
            await interpreter.close()

    async def close(self) -> None:
        interpreters, self._by_sandbox = list(self._by_sandbox.values()), {}
        await asyncio.gather(*(i.close() for i in interpreters), return_exceptions=True)
