"""Templates from a git repository: the pure decisions — the URL rules, the ref's resolution
among the advertised refs, the paths and build args, the build key and the cache's choice
(services/git_templates.py runs them, git_remote.py runs git).

The control plane fetches what a user names, so it must not become a way to reach what
only it can reach. A URL is ``https://`` (``QBOX_GIT_ALLOW_INSECURE`` adds ``http://``,
``file://`` and private addresses), without credentials (only public repositories are
fetched: nothing secret is ever stored, logged or audited), to a host whose every address
is public. The name is looked up once and git is pinned to those addresses
(services/git_remote.py), so a DNS answer that changes between the check and the fetch
(rebinding) is never used; redirects are not followed. What stays reachable: any public
address, on any port, over https.

``buildKey`` hashes the resolved commit with every build input; a ready template of the
same user with the same key is reused (``cacheHit``) without fetching.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import posixpath
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from qbox.core.errors import (
    BuildArgsInvalidError,
    DockerfilePathInvalidError,
    GitResolveUnavailableError,
    GitUrlInvalidError,
    RefNotFoundError,
    RepoNotFoundError,
    ValidationError,
)
from qbox.server.db.tables import Template

__all__ = ["BuildPaths", "GitUrl", "RefMatch", "build_key", "build_paths", "cache_source",
           "check_addresses", "check_build_args", "check_ref", "host_addresses", "match_ref",
           "no_ref", "parse_git_url", "parse_ls_remote", "pinned_addresses", "public_address",
           "redacted_url"]

MAX_URL_CHARS = 2048
MAX_REF_CHARS = 256
MAX_PATH_CHARS = 1024
MAX_BUILD_ARGS = 64
MAX_BUILD_ARG_KEY_CHARS = 128
MAX_BUILD_ARGS_BYTES = 64 * 1024
# Bumped when what a build key covers changes: older keys then never match.
BUILD_KEY_VERSION = 1
# The build settings a from-git template always has (the API sets none of them): in the key,
# so a future field that does change them cannot reuse a build made without it.
BUILD_RUNTIME = "crun"
BUILD_USER = "root"
BUILD_DISK_MB = 2048

_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?$")
SECURE_SCHEMES = ("https",)
INSECURE_SCHEMES = ("https", "http", "file")
HEX = re.compile(r"^[0-9a-f]+$")


# --- the URL -------------------------------------------------------------------------


@dataclass(frozen=True)
class GitUrl:
    url: str  # as git is given it (and as it is stored, audited and shown)
    scheme: str
    host: str  # "" for file://
    port: int

    @property
    def host_is_address(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


def _invalid_url(message: str) -> GitUrlInvalidError:
    return GitUrlInvalidError(message, details={"field": "url"})


def parse_git_url(url: str, *, allow_insecure: bool) -> GitUrl:
    """The URL's parts, or 400 git_url_invalid: the scheme (https; also http and file when
    ``allow_insecure``), no credentials, a host name or address, no query or fragment."""
    if not url or len(url) > MAX_URL_CHARS or _CONTROL.search(url) or " " in url:
        raise _invalid_url(f"url must be 1–{MAX_URL_CHARS} characters without spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _invalid_url("url is not a valid URL") from None
    scheme = parts.scheme.lower()
    allowed = INSECURE_SCHEMES if allow_insecure else SECURE_SCHEMES
    if scheme not in allowed:
        hint = "" if allow_insecure else " (http:// and file:// need QBOX_GIT_ALLOW_INSECURE on the server)"
        raise _invalid_url(f"url must start with {' or '.join(s + '://' for s in allowed)}{hint}")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise _invalid_url("url must not carry credentials: only public repositories are fetched")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise _invalid_url("url must not have a query or a fragment")
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise _invalid_url("a file:// url names an absolute path on the control plane's machine")
        return GitUrl(urlunsplit(("file", "", parts.path, "", "")), "file", "", 0)
    host = (parts.hostname or "").lower()
    if not host or not (_HOST.fullmatch(host) or _is_address(host)):
        raise _invalid_url("url must name a host")
    if not parts.path or parts.path == "/":
        raise _invalid_url("url must name a repository (a path after the host)")
    default_port = 443 if scheme == "https" else 80
    netloc = parts.netloc.lower() if port is None else parts.netloc
    return GitUrl(urlunsplit((scheme, netloc, parts.path, "", "")), scheme, host, port or default_port)


def redacted_url(url: str) -> str:
    """``url`` as an audit entry may say it, whatever it is: no user, password, query or fragment."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(not a URL)"
    netloc = parts.netloc.rpartition("@")[2]
    return _CONTROL.sub("", urlunsplit((parts.scheme, netloc, parts.path, "", "")))[:512]


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def public_address(address: str) -> bool:
    """Whether ``address`` is on the public internet (not loopback, private, link-local,
    shared, reserved, multicast; an IPv4-mapped IPv6 address counts as its IPv4 one)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_addresses(url: GitUrl, addresses: Sequence[str], *, allow_insecure: bool) -> None:
    """400 git_url_invalid unless every address ``url``'s host has is public (any, when insecure)."""
    if not addresses:
        raise RepoNotFoundError(f"the host of {url.url} has no address", details={"url": url.url})
    if not allow_insecure and not all(public_address(a) for a in addresses):
        # Which address stays unsaid: this is not a way to map the control plane's network.
        raise _invalid_url(f"the host of {url.url} resolves to an address that is not public; "
                           "the control plane fetches only from public addresses")


async def host_addresses(url: GitUrl, deadline: float) -> list[str]:
    if url.host_is_address:
        return [url.host]
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(url.host, url.port, type=socket.SOCK_STREAM),
            max(0.1, deadline - loop.time()))
    except TimeoutError:
        raise GitResolveUnavailableError(f"looking up {url.host} took too long",
                                         details={"url": url.url, "transient": True}) from None
    except socket.gaierror as exc:
        if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
            raise RepoNotFoundError(f"no such host: {url.host}", details={"url": url.url}) from None
        raise GitResolveUnavailableError(f"could not look up {url.host}",
                                         details={"url": url.url, "transient": True}) from None
    return sorted({str(info[4][0]) for info in infos})


def pinned_addresses(url: GitUrl, addresses: Sequence[str]) -> str | None:
    """curl's "host:port:addr,…" that makes git use exactly the checked addresses."""
    if url.scheme == "file" or url.host_is_address:
        return None
    shown = ",".join(f"[{a}]" if ":" in a else a for a in addresses)
    return f"{url.host}:{url.port}:{shown}"


# --- the ref -------------------------------------------------------------------------


def check_ref(ref: str) -> str:
    """A branch, tag, ``refs/…`` name, HEAD or a commit (full or short): well-formed or 400."""
    if (not ref or len(ref) > MAX_REF_CHARS or _CONTROL.search(ref) or " " in ref
            or ref.startswith(("-", "/")) or ref.endswith(("/", ".lock", "."))
            or ".." in ref or "//" in ref or "@{" in ref
            or any(c in ref for c in "~^:?*[\\")):
        raise ValidationError.for_fields(
            {"ref": "must be a branch, a tag or a commit (a git ref name, at most "
                    f"{MAX_REF_CHARS} characters)"})
    return ref


def parse_ls_remote(output: bytes) -> dict[str, str]:
    """``git ls-remote``'s lines as {ref name: commit}; an annotated tag names the commit it
    points to (its peeled ``^{}`` line)."""
    refs: dict[str, str] = {}
    peeled: dict[str, str] = {}
    for line in output.decode("utf-8", "replace").splitlines():
        sha, _, name = line.partition("\t")
        sha = sha.strip().lower()
        if not HEX.fullmatch(sha) or len(sha) not in (40, 64) or not name:
            continue
        if name.endswith("^{}"):
            peeled[name[:-3]] = sha
        else:
            refs[name] = sha
    refs.update((name, sha) for name, sha in peeled.items() if name in refs)
    return refs


@dataclass(frozen=True)
class RefMatch:
    """What ``ref`` names: a commit (and the ref it came from, if any), or for a short commit
    name no advertised ref starts with, the ``prefix`` to look for in the history."""

    sha: str | None
    refname: str | None = None
    prefix: str | None = None


def match_ref(ref: str, refs: Mapping[str, str]) -> RefMatch:
    """Resolve ``ref`` among the advertised ``refs`` (as ``git clone --branch``: a branch,
    then a tag; ``refs/…`` and ``HEAD`` as given), then as a commit name; 404 ref_not_found."""
    names = [ref] if ref == "HEAD" or ref.startswith("refs/") else [f"refs/heads/{ref}", f"refs/tags/{ref}"]
    for name in names:
        if name in refs:
            return RefMatch(refs[name], name)
    lowered = ref.lower()
    if HEX.fullmatch(lowered):
        if len(lowered) in (40, 64):
            return RefMatch(lowered)
        if 4 <= len(lowered) < 40:
            tips = {sha for sha in refs.values() if sha.startswith(lowered)}
            if len(tips) == 1:
                return RefMatch(tips.pop())
            return RefMatch(None, prefix=lowered)
    raise no_ref(ref)


def no_ref(ref: str) -> RefNotFoundError:
    return RefNotFoundError(f"the repository has no branch, tag or commit {ref!r}",
                            details={"ref": ref})


# --- paths and build args --------------------------------------------------------------


@dataclass(frozen=True)
class BuildPaths:
    """Paths inside the repository, normalised ("" is its root)."""

    dockerfile: str
    context: str


def _clean_path(value: str, field: str) -> str:
    def invalid(why: str) -> DockerfilePathInvalidError:
        return DockerfilePathInvalidError(f"{field} {why}", details={"field": field})

    if len(value) > MAX_PATH_CHARS or _CONTROL.search(value):
        raise invalid(f"must be at most {MAX_PATH_CHARS} characters without control characters")
    if value.startswith("/"):
        raise invalid("must be relative to the repository's root")
    parts = [part for part in value.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise invalid("must stay inside the repository (no '..')")
    return "/".join(parts)


def build_paths(dockerfile_path: str, context_path: str) -> BuildPaths:
    """The context directory and the Dockerfile ("": ``Dockerfile`` in the context)."""
    context = _clean_path(context_path, "contextPath")
    dockerfile = _clean_path(dockerfile_path, "dockerfilePath")
    if not dockerfile:
        dockerfile = posixpath.join(context, "Dockerfile") if context else "Dockerfile"
    return BuildPaths(dockerfile, context)


def check_build_args(build_args: Mapping[str, str]) -> dict[str, str]:
    """Names like environment variables', values without NUL, bounded; else 400 build_args_invalid."""
    def invalid(message: str) -> BuildArgsInvalidError:
        return BuildArgsInvalidError(message, details={"field": "buildArgs"})

    if len(build_args) > MAX_BUILD_ARGS:
        raise invalid(f"at most {MAX_BUILD_ARGS} build args")
    total = 0
    for key, value in build_args.items():
        if len(key) > MAX_BUILD_ARG_KEY_CHARS or not _ENV_KEY.fullmatch(key):
            raise invalid(f"build arg names are like environment variables' "
                          f"([A-Za-z_][A-Za-z0-9_]*, at most {MAX_BUILD_ARG_KEY_CHARS}); {key[:64]!r} is not")
        if "\x00" in value:
            raise invalid(f"the value of build arg {key} contains a NUL byte")
        total += len(key.encode()) + len(value.encode())
    if total > MAX_BUILD_ARGS_BYTES:
        raise invalid(f"build args are at most {MAX_BUILD_ARGS_BYTES} bytes in all")
    return dict(build_args)


# --- the build key and the cache -----------------------------------------------------------


def build_key(url: GitUrl, commit: str, paths: BuildPaths, build_args: Mapping[str, str]) -> str:
    """A hash of everything a build's image depends on: the repository and commit, the
    Dockerfile and context paths, the build args and the fixed build settings. vCPUs, memory,
    tags and the start/ready commands are not in it: they do not change the image."""
    material = {
        "version": BUILD_KEY_VERSION, "url": url.url, "commit": commit,
        "dockerfilePath": paths.dockerfile, "contextPath": paths.context,
        "buildArgs": sorted(build_args.items()),
        "runtime": BUILD_RUNTIME, "user": BUILD_USER, "diskMb": BUILD_DISK_MB,
    }
    text = json.dumps(material, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def cache_source(candidates: Sequence[Template]) -> Template | None:
    """The build to reuse among a user's ready templates of one key: one that was built (not
    itself a copy) if any, the newest first."""
    ready = [t for t in candidates if t.status == "ready"]
    ready.sort(key=lambda t: (t.built_from_template_id is not None, -t.created_at.timestamp()))
    return ready[0] if ready else None
