from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from qbox.agent.images.refs import digest_hex, local_path, validate_name, validate_ref
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
    assert validate_ref(ref) == ref


@pytest.mark.parametrize(
    "ref",
    [
        "",
        "python:3.12",  # no transport: "python" is not one
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
        validate_ref(ref)


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
