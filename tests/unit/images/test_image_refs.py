from __future__ import annotations

import base64
import json
import stat
from pathlib import Path, PurePosixPath

import pytest

from qbox.agent.images.refs import (
    RegistryCredentials,
    authfile,
    digest_hex,
    is_insecure_registry,
    local_path,
    normalize_ref,
    parse_insecure_registries,
    registry_host,
    validate_name,
)
from qbox.core.errors import ValidationError


@pytest.mark.parametrize(
    "ref",
    [
        "oci:/var/cache/qbox/base-images/python-0123/oci:latest",
        "oci:/srv/layout",
        "oci-archive:/tmp/image.tar",
        "oci-archive:/tmp/image.tar:v1",
        "docker-archive:/tmp/image.tar",
        "docker://python:3.12-slim",
        "docker://registry.internal:5000/team/image@sha256:" + "a" * 64,
    ],
)
def test_accepted_refs(ref: str) -> None:
    assert normalize_ref(ref) == ref


@pytest.mark.parametrize(
    "ref",
    [
        "",
        "Python:3.12",  # registry refs are lower case
        "python:3.12/../x",
        "ostree:/x",
        "-rf",
        "--src-creds=x:y",
        "docker-daemon:python:3",
        "containers-storage:python",
        "dir:/tmp/x",
        "docker:python",
        "docker://",
        "docker://-flag",
        "oci:relative:latest",
        "oci:",
        "oci:/tmp/x\n--debug",
        "oci:/tmp/\x00x",
        "docker://" + "a" * 5000,
    ],
)
def test_refused_refs(ref: str) -> None:
    with pytest.raises(ValidationError):
        normalize_ref(ref)


def test_local_path_is_the_part_before_the_tag() -> None:
    assert local_path("oci:/srv/layout:latest") == PurePosixPath("/srv/layout")
    assert local_path("oci-archive:/tmp/a.tar") == PurePosixPath("/tmp/a.tar")
    assert local_path("docker://python:3") is None


@pytest.mark.parametrize("name", ["python", "tpl_python", "v1.2-rc_3", "A" * 128])
def test_accepted_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "-x", ".x", "a/b", "a:b", "a b", "é", "A" * 129])
def test_refused_names(name: str) -> None:
    with pytest.raises(ValidationError):
        validate_name(name)


def test_digest_hex() -> None:
    assert digest_hex("sha256:" + "ab" * 32) == "ab" * 32
    for bad in ("sha256:" + "AB" * 32, "sha256:abc", "md5:" + "a" * 32, "ab" * 32):
        with pytest.raises(ValidationError):
            digest_hex(bad)


@pytest.mark.parametrize(
    ("ref", "source", "registry"),
    [
        ("python:3.12-slim", "docker://python:3.12-slim", "docker.io"),
        ("library/python", "docker://library/python", "docker.io"),
        ("127.0.0.1:5000/team/img:tag", "docker://127.0.0.1:5000/team/img:tag", "127.0.0.1:5000"),
        ("localhost/img", "docker://localhost/img", "localhost"),
        ("[::1]:5000/a/b:c", "docker://[::1]:5000/a/b:c", "[::1]:5000"),
        ("ghcr.io/org/app@sha256:" + "b" * 64, "docker://ghcr.io/org/app@sha256:" + "b" * 64, "ghcr.io"),
        ("docker://reg.example:443/x:1", "docker://reg.example:443/x:1", "reg.example:443"),
        ("oci:/srv/layout:tag", "oci:/srv/layout:tag", None),
    ],
)
def test_bare_registry_refs_become_docker_refs(ref: str, source: str, registry: str | None) -> None:
    assert normalize_ref(ref) == source
    assert registry_host(source) == registry


@pytest.mark.parametrize(
    ("host", "insecure"),
    [
        ("127.0.0.1:5000", True),
        ("127.9.9.9", True),
        ("localhost:5000", True),
        ("[::1]:5000", True),
        ("docker.io", False),
        ("10.0.0.1:5000", False),
        ("registry.internal:5000", True),  # listed with its port
        ("mirror.lan:8443", True),  # listed without a port: every port
        ("registry.internal:5001", False),
    ],
)
def test_tls_is_skipped_for_loopback_and_listed_registries(host: str, insecure: bool) -> None:
    listed = parse_insecure_registries(" registry.internal:5000, mirror.lan ,")
    assert is_insecure_registry(host, listed) is insecure


def test_credentials_never_show_in_repr_and_are_redacted() -> None:
    creds = RegistryCredentials("bob", "s3cret-pw")
    assert "s3cret-pw" not in repr(creds)
    token = base64.b64encode(b"bob:s3cret-pw").decode()
    assert creds.redact(f"auth {token} failed for s3cret-pw") == "auth *** failed for ***"


def test_authfile_is_private_and_removed(tmp_path: Path) -> None:
    creds = RegistryCredentials("bob", "s3cret-pw")
    with authfile(creds, "127.0.0.1:5000", tmp_path) as path:
        assert path is not None
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        auth = json.loads(path.read_text())["auths"]["127.0.0.1:5000"]["auth"]
        assert base64.b64decode(auth) == b"bob:s3cret-pw"
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError), authfile(creds, "docker.io", tmp_path):
        raise RuntimeError("pull failed")
    assert list(tmp_path.iterdir()) == []


def test_no_authfile_without_credentials_or_registry(tmp_path: Path) -> None:
    with authfile(None, "docker.io", tmp_path) as path:
        assert path is None
    with authfile(RegistryCredentials("a", "b"), None, tmp_path) as path:
        assert path is None


@pytest.mark.parametrize("username", ["", "a:b"])
def test_unusable_usernames_are_refused(tmp_path: Path, username: str) -> None:
    with pytest.raises(ValidationError), authfile(RegistryCredentials(username, "pw"), "docker.io", tmp_path):
        pass
