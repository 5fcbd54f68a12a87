"""Image references and who may pull what: one policy for the control plane and the agents.

A template's ``imageRef`` is a user's text that a host agent hands to skopeo.
Read as a path or a URL it could reach the host itself: the agent's own image
store, any file root can read, or a service on loopback or the private
network (the control plane, a cloud metadata endpoint). So a ref is parsed
here first, and ``ImageRefPolicy.check`` decides:

- registry references (``name:tag``, ``host[:port]/repo:tag``, ``docker://…``)
  are for everyone, but never to a loopback, link-local, private or otherwise
  internal address, unless the operator trusts that registry;
- local transports (``oci:``, ``oci-archive:``, ``docker-archive:``) are for
  admins, and only inside the operator's import directories;
- every other transport is refused.

The control plane checks when a template is created or rebuilt (the path
lexically, since the files are on the agent's host); the agent checks again
before it pulls, with the symlinks resolved on its own filesystem.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from qbox.core.errors import PermissionDeniedError, ValidationError

# Transports qbox imports from. Local ones name a path on the agent's host.
LOCAL_TRANSPORTS = frozenset({"oci", "oci-archive", "docker-archive"})
REGISTRY_TRANSPORT = "docker"
DOCKER_HUB = "docker.io"
# Docker Hub's names: public by definition, never looked up (and offline hosts cannot).
_DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
# skopeo transports that read the host (daemons, local storage, plain dirs):
# named explicitly so the error says why rather than "not a registry ref".
REFUSED_TRANSPORTS = frozenset(
    {"docker-daemon", "containers-storage", "dir", "ostree", "sif", "tarball", "atomic"}
)
# A docker reference: [host[:port]/]path[:tag][@sha256:hex], the distribution
# grammar, slightly loose about path separators (the registry checks the rest).
_REGISTRY_REF_RE = re.compile(
    r"(?:(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"|\[[0-9a-fA-F:.]+\])(?::[0-9]{1,5})?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?(?:@sha256:[0-9a-f]{64})?"
)
MAX_REF_LENGTH = 4096
# inet_aton's forms: 127.1, 2130706433, 0x7f000001, 0177.0.0.1 — all loopback to libc.
_INET_ATON_RE = re.compile(r"(?:0[xX][0-9a-fA-F]+|[0-9]+)(?:\.(?:0[xX][0-9a-fA-F]+|[0-9]+)){0,3}")

# What a build error says about any local source that cannot be used: the same
# words whether the path is missing, unreadable, outside the import dirs or no image.
LOCAL_SOURCE_UNUSABLE = "the local image source cannot be used (not an image in an import directory)"

Resolver = Callable[[str], Iterable[str]]


def resolve_host(host: str) -> list[str]:
    """Every address ``host`` resolves to (empty when it does not resolve)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError, OSError):
        return []
    return sorted({str(info[4][0]) for info in infos})


@dataclass(frozen=True)
class ImageSource:
    """A parsed ref: what skopeo reads (``source``) and where that is."""

    source: str
    transport: str
    # host[:port] for registry refs (Docker Hub for bare names), else None.
    registry: str | None = None
    # The file or directory a local ref reads, else None.
    path: PurePosixPath | None = None

    @property
    def is_local(self) -> bool:
        return self.transport in LOCAL_TRANSPORTS


def parse_ref(ref: str) -> ImageSource:
    """The skopeo source of a user's image ref, or ValidationError.

    A ref starting with a known transport (``docker://``, ``oci:``,
    ``oci-archive:``, ``docker-archive:``) is used as is; anything else is a
    registry reference (``python:3.12-slim``, ``registry.lan:5000/team/img:tag``)
    and gets ``docker://`` in front.
    """
    if not isinstance(ref, str) or not ref:
        raise ValidationError("image ref must be a non-empty string")
    if len(ref) > MAX_REF_LENGTH:
        raise ValidationError("image ref is too long")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in ref):
        raise ValidationError("image ref contains control characters")
    transport, sep, rest = ref.partition(":")
    if transport == REGISTRY_TRANSPORT and sep:
        name = rest.removeprefix("//")
        if not rest.startswith("//") or not _REGISTRY_REF_RE.fullmatch(name):
            raise ValidationError(f"image ref {ref!r} is not of the form docker://NAME[:TAG]")
        return ImageSource(ref, REGISTRY_TRANSPORT, registry=_registry_of(name))
    if transport in LOCAL_TRANSPORTS and sep:
        path = local_path(ref)
        if path is None or not path.is_absolute():
            raise ValidationError(f"image ref {ref!r} must name an absolute path")
        return ImageSource(ref, transport, path=path)
    if transport in REFUSED_TRANSPORTS and sep:
        raise ValidationError(
            f"image ref {ref!r} uses unsupported transport {transport!r}; use a registry reference, "
            "docker://, oci:, oci-archive: or docker-archive:"
        )
    if not _REGISTRY_REF_RE.fullmatch(ref):
        raise ValidationError(
            f"image ref {ref!r} is neither a registry reference (NAME[:TAG][@DIGEST]) nor "
            "docker://, oci:, oci-archive: or docker-archive:"
        )
    return ImageSource(f"docker://{ref}", REGISTRY_TRANSPORT, registry=_registry_of(ref))


def _registry_of(name: str) -> str:
    """Docker's rule: the first path component names a registry only if it has a '.' or
    ':' or is ``localhost``; otherwise the image is on Docker Hub."""
    first, slash, _ = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return DOCKER_HUB


def local_path(ref: str) -> PurePosixPath | None:
    """The file or directory a local-transport ref reads, or None for other refs.

    skopeo splits these refs at the first colon after the transport, so a
    path can never contain one; what follows it is the tag or archive entry.
    """
    transport, _, rest = ref.partition(":")
    if transport not in LOCAL_TRANSPORTS:
        return None
    path = rest.split(":", 1)[0]
    return PurePosixPath(path) if path else None


def split_host(registry: str) -> tuple[str, str | None]:
    """``host[:port]`` → (host, port); brackets come off an IPv6 literal."""
    if registry.startswith("["):
        host, _, after = registry[1:].partition("]")
        return host, after.removeprefix(":") or None
    host, _, port = registry.partition(":")
    return host, port or None


def literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address ``host`` spells, in any form libc accepts (``127.1``, ``0x7f000001``), else None."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _INET_ATON_RE.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def is_internal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Loopback, private, link-local, unspecified, multicast, reserved: not the public internet."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo or (None, None))[1]
        if embedded is not None and is_internal(embedded):
            return True
        if address in _NAT64:
            return is_internal(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return not address.is_global or address.is_multicast


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _normalise_listed(entry: str) -> str:
    return entry.strip().lower()


@dataclass(frozen=True)
class ImageRefPolicy:
    """What refs may be pulled: trusted registries may be internal; local paths only in import dirs."""

    # host[:port] entries; a host without a port covers every port.
    trusted_registries: frozenset[str] = frozenset()
    import_dirs: tuple[PurePosixPath, ...] = ()
    # Never read, even inside an import dir (the agent's own state).
    forbidden_dirs: tuple[PurePosixPath, ...] = field(default=())

    @classmethod
    def from_settings(cls, trusted: str | Iterable[str] | None, import_dirs: str | Iterable[str] | None,
                      *, registry: str | None = None,
                      forbidden_dirs: Iterable[str] = ()) -> ImageRefPolicy:
        """From ``QBOX_TRUSTED_REGISTRIES`` / ``QBOX_IMPORT_DIRS`` (comma-separated) and
        ``QBOX_REGISTRY`` (where builds are pushed: trusted too)."""
        # "host[:port]/prefix" (as QBOX_REGISTRY is written) trusts the host[:port].
        listed = {entry.partition("/")[0] for entry in _split(trusted)}
        if registry:
            listed.add(registry.strip().partition("/")[0])
        dirs = tuple(PurePosixPath(os.path.normpath(d)) for d in _split(import_dirs))
        for d in dirs:
            if not d.is_absolute():
                raise ValueError(f"import directory {d} must be an absolute path")
        return cls(frozenset(_normalise_listed(e) for e in listed if e.strip()), dirs,
                   tuple(PurePosixPath(os.path.normpath(d)) for d in forbidden_dirs))

    def trusts(self, registry: str) -> bool:
        host, _port = split_host(registry.lower())
        return registry.lower() in self.trusted_registries or host in self.trusted_registries

    def check(self, ref: str, *, local_allowed: bool, resolve: Resolver = resolve_host,
              realpath: Callable[[str], str] | None = None) -> ImageSource:
        """``ref`` parsed, or the reason it may not be pulled.

        ``local_allowed``: whether the caller may use local transports at all
        (admins). ``realpath``: the agent passes ``os.path.realpath`` so that
        symlinks are followed on the filesystem the path is read from.
        """
        parsed = parse_ref(ref)
        if parsed.is_local:
            if not local_allowed:
                raise PermissionDeniedError(
                    "local image sources (oci:, oci-archive:, docker-archive:) are for admins; "
                    "use a registry reference", details={"field": "imageRef"})
            assert parsed.path is not None
            if not self._in_import_dir(parsed.path, realpath):
                raise ValidationError(LOCAL_SOURCE_UNUSABLE, details={"field": "imageRef"})
            return parsed
        assert parsed.registry is not None
        if not self._registry_allowed(parsed.registry, resolve):
            raise ValidationError(
                f"image registry {parsed.registry} is on an internal address; only registries the "
                "operator trusts (QBOX_TRUSTED_REGISTRIES) may be", details={"field": "imageRef"})
        return parsed

    def _registry_allowed(self, registry: str, resolve: Resolver) -> bool:
        host, _port = split_host(registry.lower())
        if self.trusts(registry) or host in _DOCKER_HUB_HOSTS:
            return True
        literal = literal_address(host)
        if literal is not None:
            return not is_internal(literal)
        if host == "localhost" or host.endswith(".localhost"):
            return False
        addresses = [a for text in resolve(host) if (a := literal_address(text.partition("%")[0]))]
        # A name that does not resolve now is pulled by nobody; the agent checks again before it pulls.
        return not any(is_internal(a) for a in addresses)

    def _in_import_dir(self, path: PurePosixPath, realpath: Callable[[str], str] | None) -> bool:
        if ".." in path.parts:
            return False
        resolved = PurePosixPath(realpath(str(path)) if realpath else os.path.normpath(str(path)))
        dirs = [PurePosixPath(realpath(str(d))) if realpath else d for d in self.import_dirs]
        forbidden = [PurePosixPath(realpath(str(d))) if realpath else d for d in self.forbidden_dirs]
        if any(resolved.is_relative_to(d) for d in forbidden):
            return False
        return any(resolved.is_relative_to(d) for d in dirs)


def _split(text: str | Iterable[str] | None) -> list[str]:
    if text is None:
        return []
    parts = text.split(",") if isinstance(text, str) else list(text)
    return [p.strip() for p in parts if p.strip()]
