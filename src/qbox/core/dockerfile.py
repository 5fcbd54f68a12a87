"""What a Dockerfile pulls: its FROM images (and ``COPY --from=`` images), read the way
the builder reads them, so that each can be checked against the pull policy
(core/image_refs.py) before a build starts and pulled by the agent itself.

Only what decides the images is parsed: parser directives (``# escape=``),
line continuations, comments, the global ``ARG``\\s before the first ``FROM``
(build args override their defaults, as in the builder: an undeclared build
arg is not seen by ``FROM``), ``FROM [--platform=…] IMAGE [AS NAME]`` and the
``--from=`` flag of ``COPY``/``ADD``. A name of an earlier stage (or its index)
is not an image; ``scratch`` is nothing to pull.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from qbox.core.errors import ValidationError

__all__ = ["MAX_DOCKERFILE_BYTES", "DockerfileImages", "images_of", "substitute"]

MAX_DOCKERFILE_BYTES = 1024 * 1024
SCRATCH = "scratch"

_DIRECTIVE_RE = re.compile(r"#\s*([a-zA-Z][a-zA-Z0-9_-]*)\s*=\s*(.*?)\s*$")
_VAR_RE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?:(:[-+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")
_ARG_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class DockerfileImages:
    """The images a Dockerfile names, in order and without repeats (stage names resolved)."""

    images: tuple[str, ...]
    # The stages' names (lower case), in order; an unnamed stage is "".
    stages: tuple[str, ...]


def substitute(text: str, values: dict[str, str]) -> str:
    """``$VAR``, ``${VAR}``, ``${VAR:-default}`` and ``${VAR:+alt}`` as the builder expands them
    (an unknown variable is empty)."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(4)
        value = values.get(name, "")
        modifier = match.group(2)
        if modifier == ":-":
            return value or match.group(3)
        if modifier == ":+":
            return match.group(3) if value else ""
        return value

    return _VAR_RE.sub(one, text)


def _logical_lines(text: str) -> list[str]:
    """The instructions: directives read, comments dropped, continuations joined."""
    lines = text.splitlines()
    escape = "\\"
    start = 0
    # Parser directives: only at the very top, before any comment or instruction.
    for index, line in enumerate(lines):
        match = _DIRECTIVE_RE.fullmatch(line.strip())
        if match is None:
            break
        if match.group(1).lower() == "escape":
            if match.group(2) not in ("\\", "`"):
                raise ValidationError("Dockerfile: the escape directive must be \\ or `",
                                      details={"field": "dockerfile"})
            escape = match.group(2)
        start = index + 1
    out: list[str] = []
    pending = ""
    for raw in lines[start:]:
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and pending):
            continue
        if stripped.endswith(escape):
            pending += stripped[:-1] + " "
            continue
        line = (pending + stripped).strip()
        pending = ""
        if line:
            out.append(line)
    if pending.strip():
        out.append(pending.strip())
    return out


def _arg_values(spec: str, build_args: dict[str, str], values: dict[str, str]) -> None:
    for part in spec.split():
        name, eq, default = part.partition("=")
        if not _ARG_NAME_RE.fullmatch(name):
            raise ValidationError(f"Dockerfile: ARG {name!r} is not a valid name",
                                  details={"field": "dockerfile"})
        if name in build_args:
            values[name] = build_args[name]
        elif eq:
            values[name] = substitute(default.strip("\"'"), values)


def images_of(text: str, build_args: dict[str, str] | None = None) -> DockerfileImages:
    """The images ``text`` builds from; ValidationError when it has no FROM or a FROM
    that names nothing."""
    if len(text.encode()) > MAX_DOCKERFILE_BYTES:
        raise ValidationError(f"the Dockerfile is over {MAX_DOCKERFILE_BYTES} bytes",
                              details={"field": "dockerfile"})
    args = dict(build_args or {})
    globals_: dict[str, str] = {}
    images: list[str] = []
    stages: list[str] = []

    def add(image: str) -> None:
        if image.lower() != SCRATCH and image not in images:
            images.append(image)

    for line in _logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "ARG" and not stages:
            _arg_values(rest, args, globals_)
        elif keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            if not words:
                raise ValidationError("Dockerfile: a FROM names no image", details={"field": "dockerfile"})
            image = substitute(words[0], globals_)
            if not image:
                raise ValidationError(f"Dockerfile: FROM {words[0]} is empty once its ARGs are substituted",
                                      details={"field": "dockerfile"})
            name = words[2].lower() if len(words) >= 3 and words[1].lower() == "as" else ""
            if image.lower() not in stages:
                add(image)
            stages.append(name)
        elif keyword in ("COPY", "ADD") and stages:
            for flag in rest.split():
                if not flag.startswith("--"):
                    break
                if flag.lower().startswith("--from="):
                    source = flag.partition("=")[2]
                    if source.lower() not in stages and not source.isdigit():
                        add(source)
        elif not stages and keyword not in ("ARG",):
            raise ValidationError(f"Dockerfile: {keyword} before the first FROM",
                                  details={"field": "dockerfile"})
    if not stages:
        raise ValidationError("the Dockerfile has no FROM", details={"field": "dockerfile"})
    return DockerfileImages(tuple(images), tuple(stages))
