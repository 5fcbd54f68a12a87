"""Who may pull what (issue 13, finding 9): registry refs for everyone, never to internal addresses
unless trusted; local transports for admins inside the import dirs only; other transports refused."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pytest

from qbox.core.errors import PermissionDeniedError, ValidationError
from qbox.core.image_refs import ImageRefPolicy, is_internal, literal_address

# A resolver that never touches the network: what each test name resolves to.
DNS = {
    "registry.example.com": ["93.184.216.34"],
    "sneaky.example.com": ["93.184.216.34", "127.0.0.1"],
    "internal.example.com": ["10.1.2.3"],
    "metadata.example.com": ["169.254.169.254"],
    "v6.example.com": ["2606:4700::1111"],
    "v6-internal.example.com": ["fd00::1"],
    "mapped.example.com": ["::ffff:127.0.0.1"],
    "lan-registry": ["192.168.1.10"],
}


def resolve(host: str) -> Iterable[str]:
    return DNS.get(host, [])


POLICY = ImageRefPolicy.from_settings("lan-registry:5000, mirror.corp", "/srv/images,/opt/import/",
                                      registry="127.0.0.1:5005/qbox", forbidden_dirs=["/srv/images/agent"])


def check(ref: str, *, admin: bool = False, policy: ImageRefPolicy = POLICY) -> str:
    return policy.check(ref, local_allowed=admin, resolve=resolve).source


@pytest.mark.parametrize(("ref", "source"), [
    ("python:3.12-slim", "docker://python:3.12-slim"),
    ("library/busybox", "docker://library/busybox"),
    ("docker.io/library/busybox:1", "docker://docker.io/library/busybox:1"),
    ("docker://ghcr.io/org/app:1", "docker://ghcr.io/org/app:1"),
    ("registry.example.com/team/app:2", "docker://registry.example.com/team/app:2"),
    ("registry.example.com:5000/app@sha256:" + "a" * 64, "docker://registry.example.com:5000/app@sha256:" + "a" * 64),
    ("v6.example.com/app", "docker://v6.example.com/app"),
    ("[2606:4700::1111]:5000/app", "docker://[2606:4700::1111]:5000/app"),
    ("8.8.8.8:5000/app", "docker://8.8.8.8:5000/app"),
    # Trusted by the operator: internal addresses are fine.
    ("lan-registry:5000/team/app", "docker://lan-registry:5000/team/app"),
    ("mirror.corp:8443/app", "docker://mirror.corp:8443/app"),
    ("127.0.0.1:5005/qbox/templates/x:build-1", "docker://127.0.0.1:5005/qbox/templates/x:build-1"),
    # Does not resolve here: the agent checks again just before it pulls.
    ("unknown.example.net/app", "docker://unknown.example.net/app"),
])
def test_members_may_pull_from_public_and_trusted_registries(ref: str, source: str) -> None:
    assert check(ref) == source


@pytest.mark.parametrize("ref", [
    "docker://127.0.0.1:8080/v1/sandboxes",  # the control plane, as in the finding
    "127.0.0.1:5000/app", "localhost:5000/app", "localhost/app", "docker://localhost/app",
    "registry.localhost/app", "0.0.0.0:5000/app", "127.1:5000/app", "2130706433:5000/app",
    "0x7f000001:5000/app", "0177.0.0.1:5000/app", "[::1]:5000/app", "docker://[::1]/app",
    "[::]:5000/app", "[::ffff:127.0.0.1]:5000/app", "[::ffff:7f00:1]:5000/app", "[fe80::1]:5000/app",
    "[fd00::1]:5000/app", "[64:ff9b::a9fe:a9fe]:80/app", "[2002:7f00:1::]:80/app",
    "10.0.0.1:5000/app", "172.16.0.1/app", "192.168.0.1:80/app", "169.254.169.254/latest",
    "100.64.0.1:5000/app", "224.0.0.1:5000/app",
    "internal.example.com/app", "metadata.example.com/app", "sneaky.example.com/app",
    "v6-internal.example.com/app", "mapped.example.com/app",
    "lan-registry:5001/app",  # trusted with another port only
])
def test_internal_registries_are_refused_to_everyone(ref: str) -> None:
    for admin in (False, True):
        with pytest.raises(ValidationError) as caught:
            check(ref, admin=admin)
        assert caught.value.details == {"field": "imageRef"}


def test_a_trusted_name_without_a_port_covers_every_port() -> None:
    assert check("mirror.corp:1/app") == "docker://mirror.corp:1/app"
    assert check("MIRROR.corp/app".lower()) == "docker://mirror.corp/app"


@pytest.mark.parametrize("ref", [
    "oci:/var/lib/qbox/images/oci:python",  # the agent's own store, as in the finding
    "oci-archive:/srv/images/app.tar", "docker-archive:/opt/import/x.tar", "oci:/proc/1/environ",
])
def test_local_transports_are_for_admins_only(ref: str) -> None:
    with pytest.raises(PermissionDeniedError):
        check(ref)


@pytest.mark.parametrize("ref", [
    "oci:/srv/images/layout:v1", "oci-archive:/srv/images/sub/app.tar", "docker-archive:/opt/import/x.tar",
    "oci:/srv/images:latest",
])
def test_admins_may_import_from_the_import_dirs(ref: str) -> None:
    assert check(ref, admin=True) == ref


@pytest.mark.parametrize("ref", [
    "oci:/var/lib/qbox/images/oci:python", "oci:/proc/1/environ", "oci-archive:/etc/shadow",
    "oci:/srv/images/../../var/lib/qbox/images/oci:python", "oci:/srv/images/a/../../etc:x",
    "oci:/srv/imagesX/layout:1", "oci:/srv:1", "oci:/srv/images/agent/oci:x", "oci:/opt:1",
])
def test_admins_may_not_import_from_anywhere_else(ref: str) -> None:
    with pytest.raises(ValidationError) as caught:
        check(ref, admin=True)
    # One message for every such path: nothing about whether it exists.
    assert caught.value.message == "the local image source cannot be used (not an image in an import directory)"


def test_without_import_dirs_no_local_source_is_allowed() -> None:
    with pytest.raises(ValidationError):
        check("oci:/srv/images/layout:v1", admin=True, policy=ImageRefPolicy())


def test_symlinks_are_followed_where_the_path_is_read(tmp_path: Path) -> None:
    imports = tmp_path / "imports"
    imports.mkdir()
    (imports / "layout").mkdir()
    (imports / "escape").symlink_to("/etc")
    (imports / "inside").symlink_to(imports / "layout")
    policy = ImageRefPolicy.from_settings(None, str(imports))
    ok = policy.check(f"oci:{imports}/inside:1", local_allowed=True, realpath=os.path.realpath)
    assert ok.source == f"oci:{imports}/inside:1"
    with pytest.raises(ValidationError):
        policy.check(f"oci:{imports}/escape/x:1", local_allowed=True, realpath=os.path.realpath)
    # Lexically inside, so the control plane (which cannot see the agent's files) lets it through.
    assert policy.check(f"oci:{imports}/escape/x:1", local_allowed=True).path is not None


@pytest.mark.parametrize("ref", [
    "dir:/tmp/x", "docker-daemon:python:3", "tarball:/tmp/x.tar", "containers-storage:python",
    "ostree:/x", "sif:/x.sif", "atomic:x", "http://registry.example.com/app", "file:///etc/passwd",
    "ftp://x/y", "docker:python", "-rf", "--src-creds=a:b", "oci:relative:tag", "python:3\n--debug",
])
def test_other_transports_and_malformed_refs_are_refused(ref: str) -> None:
    for admin in (False, True):
        with pytest.raises(ValidationError):
            check(ref, admin=admin)


@pytest.mark.parametrize(("text", "internal"), [
    ("127.0.0.1", True), ("127.1", True), ("2130706433", True), ("0x7f000001", True), ("0177.1", True),
    ("0.0.0.0", True), ("0", True), ("10.1.1.1", True), ("::1", True), ("::", True),
    ("::ffff:10.0.0.1", True), ("fe80::1", True), ("169.254.1.1", True), ("8.8.8.8", False),
    ("2606:4700::1111", False), ("::ffff:8.8.8.8", False),
])
def test_address_forms(text: str, internal: bool) -> None:
    address = literal_address(text)
    assert address is not None
    assert is_internal(address) is internal


def test_names_are_not_addresses() -> None:
    assert literal_address("registry.example.com") is None
    assert literal_address("0x") is None
    assert literal_address("1.2.3.4.5") is None


def test_import_dirs_must_be_absolute() -> None:
    with pytest.raises(ValueError):
        ImageRefPolicy.from_settings(None, "relative/dir")
