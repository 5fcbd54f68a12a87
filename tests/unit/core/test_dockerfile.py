"""core/dockerfile.py: the images a Dockerfile builds from, read the way the builder reads them."""

from __future__ import annotations

import pytest

from qbox.core.dockerfile import images_of, substitute
from qbox.core.errors import ValidationError


def test_from_lines_with_global_args_and_build_args() -> None:
    text = """\
# syntax is a comment here
ARG REG=registry.example.com
ARG TAG=3.12
FROM $REG/python:${TAG} AS build
ARG TAG
RUN echo $TAG
FROM ${REG}/runtime:${TAG:-latest}
"""
    assert images_of(text).images == ("registry.example.com/python:3.12",
                                      "registry.example.com/runtime:3.12")
    # A build arg overrides a declared ARG's default.
    assert images_of(text, {"TAG": "3.13"}).images == ("registry.example.com/python:3.13",
                                                       "registry.example.com/runtime:3.13")


def test_an_undeclared_build_arg_is_not_seen_by_from() -> None:
    assert images_of("FROM alpine:${V:-3}\n", {"V": "9"}).images == ("alpine:3",)


def test_stage_names_and_scratch_are_not_images_copy_from_an_image_is() -> None:
    text = """\
FROM golang:1.22 AS Build
RUN go build
FROM scratch
COPY --from=build /out /app
COPY --from=0 /out /app2
COPY --chown=1:1 --from=nginx:1.27 /etc/nginx/nginx.conf /etc/
FROM build
"""
    found = images_of(text)
    assert found.images == ("golang:1.22", "nginx:1.27")
    assert found.stages == ("build", "", "")


def test_continuations_comments_and_the_escape_directive() -> None:
    text = "# escape=`\nFROM `\n  # a comment inside\n  busybox:1 `\n  AS one\nRUN echo \\\n"
    found = images_of(text)
    assert found.images == ("busybox:1",) and found.stages == ("one",)


def test_platform_flag_is_skipped() -> None:
    assert images_of("FROM --platform=linux/amd64 debian:12\n").images == ("debian:12",)


@pytest.mark.parametrize("text", ["", "# only a comment\n", "RUN true\nFROM x\n", "FROM\n",
                                  "ARG B\nFROM $B\n", "ARG 9x=1\nFROM a\n"])
def test_refused(text: str) -> None:
    with pytest.raises(ValidationError) as caught:
        images_of(text)
    assert caught.value.details == {"field": "dockerfile"}


def test_too_big() -> None:
    with pytest.raises(ValidationError):
        images_of("FROM a\n" + "#" * (1024 * 1024))


def test_substitute_forms() -> None:
    values = {"A": "1", "E": ""}
    assert substitute("$A-${A}-${B:-d}-${A:+alt}-${E:+alt}-${E:-x}-$B.", values) == "1-1-d-alt--x-."
