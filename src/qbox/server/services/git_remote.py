"""Running git against a template's repository: list its refs, fetch one commit, read a file
and archive a directory of that commit (services/git_sources.py decides what to ask).

Git runs as a child process with nothing of the control plane's: no inherited environment
(no credential helpers, proxies, askpass or terminal prompts), no system or global config,
``HOME`` in the request's own temporary directory, only the protocols the URL rules allow,
no redirects (each would be a request to a host nobody checked), the host's name pinned to
the addresses that were checked (``http.curloptResolve``: git does not look the name up
again), no hooks, no submodules and no LFS. It never checks a tree out: files are read from
the object database and the context is ``git archive``'s tar. Every call has a deadline and
bounded output; the temporary directory goes when the workspace closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

from qbox.core.errors import (
    GitResolveUnavailableError,
    PayloadTooLargeError,
    QboxError,
    RepoNotFoundError,
    RepoUnauthorizedError,
)

log = logging.getLogger("qbox.git")

# A listing of refs, a cat-file answer: far above any real repository's, far below memory's.
MAX_LISTING_BYTES = 16 * 1024 * 1024
MAX_STDERR_BYTES = 64 * 1024
# What an error message quotes of git's own words.
MAX_QUOTED_CHARS = 300
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_CHUNK = 64 * 1024
# What git says when a server will not give what was asked (then another way is tried).
_REFUSED = ("not our ref", "unadvertised object", "couldn't find remote ref", "no such remote ref",
            "not a valid object", "is not a commit", "not a tree", "does not support shallow",
            "shallow file has changed")

# Every git call starts with these (the URL rules add the protocols and the pinned addresses).
_BASE_CONFIG = (
    "credential.helper=",
    "core.askPass=",
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "http.followRedirects=false",
    "fetch.recurseSubmodules=false",
    "submodule.recurse=false",
    "transfer.fsckObjects=true",
    "gc.auto=0",
    "maintenance.auto=false",
    "advice.detachedHead=false",
)


@dataclass(frozen=True)
class Access:
    """How git may reach one repository: the protocols, and the addresses a host name is pinned to."""

    protocols: tuple[str, ...]
    # "host:port:addr[,addr…]" for curl, or None (file://, or nothing to pin).
    resolve: str | None = None


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: bytes
    stderr: str


class OutputTooLarge(Exception):
    pass


def quoted(stderr: str) -> str:
    """The last meaningful line git wrote, safe to put in a message (bounded, no control characters)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    meaningful = [line for line in lines if line.startswith(("fatal:", "error:", "remote:"))] or lines
    text = _CONTROL.sub("", meaningful[-1]) if meaningful else "no message"
    return text[:MAX_QUOTED_CHARS]


def failure(stderr: str, url: str) -> QboxError:
    """What git's failure to reach ``url`` means to the caller (its words are English: LC_ALL=C)."""
    text = stderr.lower()
    said = quoted(stderr)
    details = {"url": url}
    if ("could not read username" in text or "could not read password" in text
            or "authentication failed" in text or "returned error: 401" in text
            or "returned error: 403" in text or "terminal prompts disabled" in text):
        return RepoUnauthorizedError(
            f"the git server asks for credentials for {url} (only public repositories are "
            f"fetched): {said}", details=details)
    if ("returned error: 404" in text or "repository not found" in text
            or "does not appear to be a git repository" in text or "not found" in text
            or "could not resolve host" in text or "no such file or directory" in text):
        return RepoNotFoundError(f"no git repository at {url}: {said}", details=details)
    if "returned error: 3" in text:
        return RepoNotFoundError(f"{url} answered with a redirect, which is not followed "
                                 f"(give the repository's final URL): {said}", details=details)
    if "returned error: 4" in text:
        return RepoNotFoundError(f"the git server refused {url}: {said}", details=details)
    if "certificate" in text or ("protocol" in text and "not supported" in text):
        return GitResolveUnavailableError(f"git cannot fetch {url}: {said}",
                                          details={**details, "transient": False})
    return GitResolveUnavailableError(f"could not reach the git repository {url}: {said}",
                                      details={**details, "transient": True})


def git_environment(home: str, access: Access) -> dict[str, str]:
    """The whole environment of a git child: nothing inherited but a fixed PATH."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "XDG_CONFIG_HOME": home,
        "LC_ALL": "C",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "",
        "SSH_ASKPASS": "",
        "GIT_ALLOW_PROTOCOL": ":".join(access.protocols),
        "GIT_PROTOCOL_FROM_USER": "0",
        "GIT_LFS_SKIP_SMUDGE": "1",
        "GIT_NO_REPLACE_OBJECTS": "1",
        "GIT_OPTIONAL_LOCKS": "0",
    }


def git_config(access: Access) -> list[str]:
    config = list(_BASE_CONFIG)
    config.append("protocol.allow=never")
    config += [f"protocol.{name}.allow=always" for name in access.protocols]
    if access.resolve is not None:
        config.append(f"http.curloptResolve={access.resolve}")
    return [arg for item in config for arg in ("-c", item)]


class GitWorkspace:
    """A temporary bare repository for one request, and the git calls it makes.

    Use as ``async with GitWorkspace(url, access, deadline) as git:``; ``deadline`` is the
    event loop's time by which every call must be over (then 503 git_resolve_unavailable).
    """

    def __init__(self, url: str, access: Access, deadline: float) -> None:
        self.url = url
        self.access = access
        self.deadline = deadline
        self._dir: str | None = None

    async def __aenter__(self) -> GitWorkspace:
        self._dir = await asyncio.to_thread(tempfile.mkdtemp, prefix="qbox-git-")
        await self._ok(["init", "--quiet", "--bare", "--template=", self.repo], remote=False)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._dir is not None:
            await asyncio.to_thread(shutil.rmtree, self._dir, True)
            self._dir = None

    @property
    def home(self) -> str:
        assert self._dir is not None, "outside 'async with'"
        return os.path.join(self._dir, "home")

    @property
    def repo(self) -> str:
        assert self._dir is not None, "outside 'async with'"
        return os.path.join(self._dir, "repo.git")

    # --- what git_sources asks ---------------------------------------------------

    async def list_refs(self) -> bytes:
        """``git ls-remote``'s output: "<sha>\\t<refname>" lines, HEAD and peeled tags included."""
        return await self._ok(["ls-remote", "--", self.url], remote=True)

    async def fetch(self, refspecs: Sequence[str], *, depth: int | None) -> bool:
        """Fetch ``refspecs`` (a commit or refs, each into refs/qbox/…); False when the server
        refused them (an unadvertised commit, a ref gone, no shallow fetches), any other
        failure raised as its error."""
        args = ["--git-dir", self.repo, "fetch", "--quiet", "--no-tags", "--no-write-fetch-head",
                "--no-recurse-submodules", "--no-auto-gc"]
        if depth is not None:
            args.append(f"--depth={depth}")
        done = await self._run([*args, "--", self.url, *refspecs], remote=True, limit=MAX_LISTING_BYTES)
        if done.returncode == 0:
            return True
        text = done.stderr.lower()
        if any(words in text for words in _REFUSED):
            return False
        raise failure(done.stderr, self.url)

    async def commit_exists(self, sha: str) -> bool:
        done = await self._run(["--git-dir", self.repo, "cat-file", "-e", f"{sha}^{{commit}}"],
                               remote=False, limit=MAX_STDERR_BYTES)
        return done.returncode == 0

    async def unique_commit(self, prefix: str) -> str | None:
        """The one fetched commit whose name starts with ``prefix`` (None: none, or several)."""
        done = await self._run(["--git-dir", self.repo, "rev-parse", "--verify", "--quiet",
                                "--end-of-options", f"{prefix}^{{commit}}"],
                               remote=False, limit=MAX_STDERR_BYTES)
        sha = done.stdout.decode("ascii", "replace").strip()
        return sha if done.returncode == 0 and sha else None

    async def lookup(self, sha: str, path: str, *, max_bytes: int) -> tuple[str, str, bytes]:
        """(kind, object id, content) of ``path`` in commit ``sha``, following symbolic links
        inside the tree: kind "blob" or "tree" (content read for a blob of at most
        ``max_bytes``, else empty), or "missing", "outside" (a link out of the tree),
        "loop", "notdir", "toolarge"."""
        spec = f"{sha}:{path}".encode()
        check = await self._run(["--git-dir", self.repo, "cat-file", "--batch-check",
                                 "--follow-symlinks"], remote=False, limit=MAX_STDERR_BYTES,
                                stdin=spec + b"\n")
        head = check.stdout.split(b"\n", 1)[0].decode("utf-8", "replace").split()
        if check.returncode != 0 or not head:
            raise failure(check.stderr, self.url)
        if head[-1] == "missing":
            return "missing", "", b""
        if head[0] in ("symlink", "dangling"):
            return ("outside" if head[0] == "symlink" else "missing"), "", b""
        if head[0] in ("loop", "notdir"):
            return head[0], "", b""
        object_id, kind, size = head[0], head[1], int(head[2])
        if kind != "blob":
            return kind, object_id, b""
        if size > max_bytes:
            return "toolarge", object_id, b""
        blob = await self._ok(["--git-dir", self.repo, "cat-file", "blob", object_id], remote=False)
        return "blob", object_id, blob

    async def archive(self, tree: str, max_bytes: int) -> bytes:
        """A tar of tree ``tree``; over ``max_bytes`` a 413 (reading stops there)."""
        try:
            done = await self._run(["--git-dir", self.repo, "archive", "--format=tar", tree],
                                   remote=False, limit=max_bytes)
        except OutputTooLarge:
            raise PayloadTooLargeError(
                f"the build context is larger than {max_bytes} bytes (QBOX_MAX_BUILD_CONTEXT_BYTES)",
                details={"field": "contextPath", "maxBytes": max_bytes}) from None
        if done.returncode != 0:
            raise failure(done.stderr, self.url)
        return done.stdout

    # --- running -------------------------------------------------------------------

    async def _ok(self, args: list[str], *, remote: bool) -> bytes:
        done = await self._run(args, remote=remote, limit=MAX_LISTING_BYTES)
        if done.returncode != 0:
            raise failure(done.stderr, self.url)
        return done.stdout

    async def _run(self, args: list[str], *, remote: bool, limit: int,
                   stdin: bytes | None = None) -> Completed:
        """One git call, bounded in time (the workspace's deadline) and output (``limit``)."""
        assert self._dir is not None
        loop = asyncio.get_running_loop()
        remaining = self.deadline - loop.time()
        if remaining <= 0:
            raise _timed_out(self.url)
        os.makedirs(self.home, exist_ok=True)
        try:
            process = await asyncio.create_subprocess_exec(
                "git", *git_config(self.access), *args,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env=git_environment(self.home, self.access), cwd=self._dir,
                # Its own group: a timeout ends git's helpers (git-remote-https) with it.
                start_new_session=True)
        except FileNotFoundError:
            raise GitResolveUnavailableError(
                "git is not installed on the control plane (docs/operations.md, \"Templates from git\")",
                details={"url": self.url, "transient": False}) from None
        try:
            return await asyncio.wait_for(self._collect(process, limit, stdin), remaining)
        except TimeoutError:
            raise _timed_out(self.url) from None
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(process.wait(), 5)

    async def _collect(self, process: asyncio.subprocess.Process, limit: int,
                       stdin: bytes | None) -> Completed:
        assert process.stdout is not None and process.stderr is not None

        async def feed() -> None:
            if process.stdin is not None and stdin is not None:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    process.stdin.write(stdin)
                    await process.stdin.drain()
                process.stdin.close()

        async def errors() -> bytes:
            assert process.stderr is not None
            kept = bytearray()
            while chunk := await process.stderr.read(_CHUNK):
                kept += chunk
                del kept[:-MAX_STDERR_BYTES]
            return bytes(kept)

        feeding = asyncio.create_task(feed())
        stderr_task = asyncio.create_task(errors())
        out = bytearray()
        try:
            while chunk := await process.stdout.read(_CHUNK):
                out += chunk
                if len(out) > limit:
                    raise OutputTooLarge()
            await feeding
            stderr = await stderr_task
            returncode = await process.wait()
        finally:
            for task in (feeding, stderr_task):
                task.cancel()
        text = stderr.decode("utf-8", "replace")
        if returncode != 0:
            log.info("git %s: exit %d: %s", process.pid, returncode, quoted(text))
        return Completed(returncode, bytes(out), text)


def _timed_out(url: str) -> GitResolveUnavailableError:
    return GitResolveUnavailableError(
        f"the git repository {url} did not answer in time (QBOX_GIT_TIMEOUT_SECONDS)",
        details={"url": url, "transient": True})


__all__ = ["Access", "GitWorkspace", "failure", "git_config", "git_environment", "quoted"]
