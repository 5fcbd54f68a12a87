"""Template operations, written once for sync and async (see ``_steps``).

Wire shapes (WIRE_PROTOCOL.md §3.2/§4.10): ``POST /v1/templates`` answers 201
with the template still ``building``; the build runs on the server. Its log is
``GET …/build-log`` (text/plain, one line per ``\\n``); ``?follow=true`` keeps
the body open and streams new lines until the build is ``ready`` or
``failed``. Waiting for a build follows that stream, then reads the template
for its outcome. A stream that stalls or drops is opened again (lines already
delivered are skipped), so a quiet build step never looks like a dead server;
a server without a build log is polled instead.
"""

from __future__ import annotations

import base64
import codecs
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from qbox.core.errors import (
    NotFoundError,
    TemplateBuildError,
    TemplateBuildTimeoutError,
    TemplateNotFoundError,
    TransportError,
)
from qbox.sdk._api import Api
from qbox.sdk._models import CodeInterpreterMode, TemplateInfo, WarmPool, as_list
from qbox.sdk._sandbox_ops import TEMPLATE_ID_PREFIX
from qbox.sdk._steps import AsyncCallback, Close, Deliver, Now, Op, Read, Sleep

DEFAULT_BUILD_TIMEOUT = 600.0
DEFAULT_READY_TIMEOUT_S = 30
DEFAULT_VCPUS = 1
DEFAULT_MEMORY_MB = 512
POLL_SECONDS = 3.0  # the published SDK's cadence (WIRE_PROTOCOL.md §5.4)
# A followed log silent this long is opened again: the build may be in a quiet step, or the
# connection may be dead without anyone noticing; a fresh request tells which.
STALL_SECONDS = 30.0
TEXT = "text/plain"

_UTF8 = codecs.getincrementaldecoder("utf-8")

LogCallback = Callable[[str], object]
AsyncLogCallback = AsyncCallback[str]
RegistryCredentials = tuple[str, str] | Mapping[str, str]


class Step:
    """Build steps for ``Template.create(steps=[...])``, as the wire dicts (plain dicts work too).

    Steps run in order in the image being built; ``env`` and ``workdir`` apply to the steps
    after them, and end up in the template's sandboxes.
    """

    @staticmethod
    def run(cmd: str, user: str = "root") -> dict[str, Any]:
        """Run ``cmd`` with ``/bin/sh -c`` as ``user``; a non-zero exit fails the build."""
        return {"run": cmd, "user": user}

    @staticmethod
    def env(values: Mapping[str, str] | None = None, /, **more: str) -> dict[str, Any]:
        """Set environment variables (a mapping and/or keywords)."""
        return {"env": {str(k): str(v) for k, v in {**(values or {}), **more}.items()}}

    @staticmethod
    def workdir(path: str) -> dict[str, Any]:
        """The directory later ``run`` steps start in (made if missing)."""
        return {"workdir": path}

    @staticmethod
    def copy(path: str, content: str | bytes, mode: int = 0o644, user: str = "root") -> dict[str, Any]:
        """Write ``content`` to the absolute ``path``, owned by ``user``; bytes travel as base64."""
        if isinstance(content, bytes):
            text, encoding = base64.b64encode(content).decode("ascii"), "base64"
        else:
            text, encoding = content, "utf-8"
        return {"copy": {"path": path, "content": text, "encoding": encoding, "mode": mode, "user": user}}


def _credentials(value: RegistryCredentials) -> dict[str, str]:
    if isinstance(value, Mapping):
        username, password = value.get("username"), value.get("password")
    else:
        username, password = value
    if not isinstance(username, str) or not isinstance(password, str):
        # Never echo the value: it holds a password.
        raise ValueError("registry_credentials must be (username, password) or {'username': …, 'password': …}")
    return {"username": username, "password": password}


@dataclass(frozen=True)
class TemplateSpec:
    """What ``POST /v1/templates`` is asked to build; ``body()`` is the wire JSON."""

    name: str
    image_ref: str
    steps: Sequence[Mapping[str, Any]] = ()
    start_cmd: str | None = None
    ready_cmd: str | None = None
    ready_timeout_s: int = DEFAULT_READY_TIMEOUT_S
    default_vcpus: int = DEFAULT_VCPUS
    default_memory_mb: int = DEFAULT_MEMORY_MB
    default_disk_mb: int | None = None
    enable_ssh: bool = False
    tags: Sequence[str] = ()
    user: str | None = None
    workdir: str | None = None
    env: Mapping[str, str] | None = None
    allow_internet_access: bool | None = None
    runtime: str | None = None
    registry_credentials: RegistryCredentials | None = field(default=None, repr=False)
    public: bool = False
    host_selector: Mapping[str, str] | None = None
    code_interpreter: CodeInterpreterMode | None = None
    warm_pool: WarmPool | None = None

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "imageRef": self.image_ref,
            "defaultVcpus": int(self.default_vcpus),
            "defaultMemoryMb": int(self.default_memory_mb),
            "readyTimeoutS": int(self.ready_timeout_s),
            "enableSsh": bool(self.enable_ssh),
            "tags": [str(t) for t in self.tags],
        }
        optional: dict[str, Any] = {
            "steps": [dict(step) for step in self.steps] or None,
            "startCmd": self.start_cmd,
            "readyCmd": self.ready_cmd,
            "user": self.user,
            "workdir": self.workdir,
            "env": {str(k): str(v) for k, v in self.env.items()} if self.env else None,
            "defaultDiskMb": None if self.default_disk_mb is None else int(self.default_disk_mb),
            "allowInternetAccess": self.allow_internet_access,
            "runtime": self.runtime,
            "hostSelector": _selector(self.host_selector) if self.host_selector else None,
            "codeInterpreter": self.code_interpreter,
            "warmPool": None if self.warm_pool is None else self.warm_pool.body(),
        }
        body.update({key: value for key, value in optional.items() if value is not None})
        if self.public:
            body["public"] = True
        if self.registry_credentials is not None:
            body["registryCredentials"] = _credentials(self.registry_credentials)
        return body


def template_path(template_id: str, suffix: str = "") -> str:
    return f"/v1/templates/{template_id}{suffix}"


def list_templates(api: Api, *, service: str | None) -> Op[list[TemplateInfo]]:
    rows = as_list((yield from api.get("/v1/templates", params={"service": service})), "the template list")
    return [TemplateInfo.from_wire(row) for row in rows]


def _by_name(api: Api, name: str) -> Op[TemplateInfo]:
    for info in (yield from list_templates(api, service=None)):
        if info.name == name:
            return info
    raise TemplateNotFoundError(f"no template named {name!r}", details={"templateName": name})


def template_id(api: Api, template: str) -> Op[str]:
    """``tpl_…`` as given; anything else is a name, looked up in the list (whatever its status)."""
    if template.startswith(TEMPLATE_ID_PREFIX):
        return template
    return (yield from _by_name(api, template)).id


def get_template(api: Api, template: str) -> Op[TemplateInfo]:
    """A template by ``tpl_…`` id or by name."""
    if not template.startswith(TEMPLATE_ID_PREFIX):
        return (yield from _by_name(api, template))
    return TemplateInfo.from_wire((yield from api.get(template_path(template))))


@dataclass(frozen=True)
class BuildWait:
    """Follow a started build to its end (lines to ``on_log``) for at most ``timeout`` seconds."""

    on_log: LogCallback | None
    timeout: float | None

    @classmethod
    def asked(cls, wait: bool, on_log: LogCallback | None, timeout: float | None) -> BuildWait | None:
        """What ``wait=``/``on_log=`` ask for: following the log implies waiting."""
        return cls(on_log, timeout) if wait or on_log is not None else None


def create_template(api: Api, spec: TemplateSpec, waiting: BuildWait | None = None) -> Op[TemplateInfo]:
    info = TemplateInfo.from_wire((yield from api.post("/v1/templates", json=spec.body())))
    return (yield from _then_wait(api, info, waiting))


def rebuild_template(api: Api, template: str, credentials: RegistryCredentials | None,
                     waiting: BuildWait | None = None) -> Op[TemplateInfo]:
    tid = yield from template_id(api, template)
    body = None if credentials is None else {"registryCredentials": _credentials(credentials)}
    info = TemplateInfo.from_wire((yield from api.post(template_path(tid, "/rebuild"), json=body)))
    return (yield from _then_wait(api, info, waiting))


def _then_wait(api: Api, info: TemplateInfo, waiting: BuildWait | None) -> Op[TemplateInfo]:
    if waiting is None:
        return info
    return (yield from wait_for_build(api, info.id, timeout=waiting.timeout, on_log=waiting.on_log))


def _selector(selector: Mapping[str, str]) -> dict[str, str]:
    return {str(key): str(value) for key, value in selector.items()}


def set_template_public(api: Api, template: str, public: bool) -> Op[TemplateInfo]:
    """``PATCH /v1/templates/{id}`` (admins only): every user sees and spawns a public template."""
    return (yield from _patch(api, template, {"public": bool(public)}))


def set_host_selector(api: Api, template: str, selector: Mapping[str, str]) -> Op[TemplateInfo]:
    """``PATCH /v1/templates/{id}``: the labels a host needs to run its sandboxes (replaced whole)."""
    return (yield from _patch(api, template, {"hostSelector": _selector(selector)}))


def as_warm_pool(value: WarmPool | int | None) -> WarmPool | None:
    """``warm_pool=`` as given: a ``WarmPool``, or just its size (its kernels then start eagerly)."""
    return WarmPool(value) if isinstance(value, int) else value


def warm_pool_patch(size: int | None, eager: bool | None) -> dict[str, Any]:
    """The ``warmPool`` of a PATCH body: only what is given changes."""
    if size is None and eager is None:
        raise ValueError("set_warm_pool needs size, eager or both")
    fields = {"size": None if size is None else int(size), "eager": None if eager is None else bool(eager)}
    return {key: value for key, value in fields.items() if value is not None}


def set_warm_pool(api: Api, template: str, size: int | None, eager: bool | None) -> Op[TemplateInfo]:
    """``PATCH /v1/templates/{id}`` ``{"warmPool": …}``: a size above 0 is for admins only."""
    return (yield from _patch(api, template, {"warmPool": warm_pool_patch(size, eager)}))


def set_code_interpreter(api: Api, template: str, mode: CodeInterpreterMode) -> Op[TemplateInfo]:
    """``PATCH /v1/templates/{id}``: when its new sandboxes start their kernel (owner or admin)."""
    return (yield from _patch(api, template, {"codeInterpreter": mode}))


def _patch(api: Api, template: str, body: dict[str, Any]) -> Op[TemplateInfo]:
    tid = yield from template_id(api, template)
    return TemplateInfo.from_wire((yield from api.request("PATCH", template_path(tid), json=body)))


def delete_template(api: Api, template: str) -> Op[None]:
    tid = yield from template_id(api, template)
    yield from api.delete(template_path(tid))


def build_log(api: Api, template: str) -> Op[str]:
    """The current (or last) build's log, whole."""
    tid = yield from template_id(api, template)
    request = api.build("GET", template_path(tid, "/build-log"))
    request = replace(request, headers={**request.headers, "Accept": TEXT})
    response = yield from api.exchange(request)
    return response.content.decode("utf-8", "replace")


@dataclass
class LogCursor:
    """An open ``build-log?follow=true`` body, cut into lines as it arrives."""

    stream: Any
    skip: int = 0  # lines a previous connection already delivered
    finished: bool = False
    _partial: str = ""
    _decoder: codecs.IncrementalDecoder = field(default_factory=lambda: _UTF8("replace"))

    def _take(self, lines: list[str]) -> list[str]:
        fresh = [line.removesuffix("\r") for line in lines]
        dropped = min(self.skip, len(fresh))
        self.skip -= dropped
        return fresh[dropped:]

    def feed(self, chunk: bytes) -> list[str]:
        *lines, self._partial = (self._partial + self._decoder.decode(chunk)).split("\n")
        return self._take(lines)

    def end(self) -> list[str]:
        self.finished = True
        last, self._partial = self._partial + self._decoder.decode(b"", final=True), ""
        return self._take([last] if last else [])


def open_log(api: Api, template_id: str, *, timeout: float | None, skip: int = 0) -> Op[LogCursor]:
    """Follow the build log. ``timeout`` bounds each wait for the next chunk (``None``: no bound)."""
    request = api.build("GET", template_path(template_id, "/build-log"), params={"follow": True})
    request = replace(request, headers={**request.headers, "Accept": TEXT}, timeout=timeout)
    response = yield from api.open(request)
    return LogCursor(stream=response.stream, skip=skip)


def next_lines(cursor: LogCursor) -> Op[list[str]]:
    """The lines the stream's next chunk completes; at its end, an unfinished last line."""
    if cursor.finished:
        return []
    chunk = yield from Read(cursor.stream)
    return cursor.end() if chunk is None else cursor.feed(chunk)


def close_log(cursor: LogCursor) -> Op[None]:
    """Give the stream up early; nothing when it was read to its end."""
    if not cursor.finished:
        cursor.finished = True
        yield from Close(cursor.stream)


@dataclass
class _Watch:
    template_id: str
    deadline: float | None
    on_log: LogCallback | None
    delivered: int = 0

    def left(self, now: float) -> float | None:
        return None if self.deadline is None else self.deadline - now


def _follow(api: Api, watch: _Watch) -> Op[None]:
    """Hand new log lines to ``on_log`` until the stream ends, stalls (a TransportError) or time is up."""
    left = watch.left((yield from Now()))
    stall = STALL_SECONDS if left is None else max(0.001, min(STALL_SECONDS, left))
    cursor = yield from open_log(api, watch.template_id, timeout=stall, skip=watch.delivered)
    try:
        while not cursor.finished:
            for line in (yield from next_lines(cursor)):
                watch.delivered += 1
                if watch.on_log is not None:
                    yield from Deliver(watch.on_log, line)
            left = watch.left((yield from Now()))
            if left is not None and left <= 0:
                return
    finally:
        yield from close_log(cursor)


def build_outcome(info: TemplateInfo) -> TemplateInfo:
    """``info`` when it is ready; ``TemplateBuildError`` when its build failed."""
    if info.is_failed:
        reason = info.build_error or "no reason given"
        raise TemplateBuildError(
            f"template {info.name or info.id} failed to build: {reason}",
            template_id=info.id,
            build_error=info.build_error,
        )
    return info


def wait_for_build(
    api: Api, template: str, *, timeout: float | None, on_log: LogCallback | None = None
) -> Op[TemplateInfo]:
    """Follow the build to its end (lines to ``on_log``); the ready template, or raise."""
    tid = yield from template_id(api, template)
    start = yield from Now()
    watch = _Watch(tid, None if timeout is None else start + timeout, on_log)
    follow = True
    while True:
        if follow:
            try:
                yield from _follow(api, watch)
            except TemplateNotFoundError:
                raise
            except NotFoundError:
                follow = False  # no build log on this server: poll the template instead
            except TransportError:
                pass  # stalled or dropped: see how the build stands, then follow again
        info = build_outcome(TemplateInfo.from_wire((yield from api.get(template_path(tid)))))
        if not info.is_building:
            return info
        left = watch.left((yield from Now()))
        if left is not None and left <= 0:
            raise TemplateBuildTimeoutError(
                f"template {info.name or tid} is still {info.status or 'building'} after {timeout:g}s; "
                f"the build goes on (follow it with `qbox templates logs {tid} -f`)",
                template_id=tid,
            )
        yield from Sleep(POLL_SECONDS if left is None else min(POLL_SECONDS, left))
