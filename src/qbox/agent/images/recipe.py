"""What goes into the built-in base image: the recipe and its cache key.

A recipe says what goes into an image (Debian suite, packages, the sandbox
user, image config). Its ``key()`` hashes all of that plus ``RECIPE_VERSION``,
so a built image is cached under its key and reused for ever: change the
recipe (or bump the version when the build steps change) and a new key
makes a new image while existing templates keep theirs. ``base_image``
builds a recipe into the machine's cache; ``bootstrap`` makes its root
filesystem.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field

# Bump when the build steps change in a way the recipe's fields do not show.
RECIPE_VERSION = 2

SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Docs, man pages and translations are most of a minimal system's size and no
# sandbox reads them; copyright files stay for licence compliance. mmdebstrap
# keeps these in the image's dpkg config, so later installs stay slim too.
SLIM_DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
)

_PACKAGE_RE = re.compile(r"[a-z0-9][a-z0-9+.-]+")
_WORD_RE = re.compile(r"[a-z0-9][a-z0-9-]*")
# Exactly pinned: a wheel's version (and hash) must not drift between builds.
_REQUIREMENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*==[0-9][A-Za-z0-9.+!-]*")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class SandboxUser:
    name: str = "user"
    uid: int = 1000
    gid: int = 1000
    home: str = "/home/user"
    shell: str = "/bin/bash"


@dataclass(frozen=True)
class Wheel:
    """A pure-Python package Debian lacks: fetched from PyPI on the host, unzipped into the image.

    No pip runs inside the image, so nothing of PyPI's executes as root there.
    """

    requirement: str  # "name==version"
    sha256: str

    def __post_init__(self) -> None:
        if not _REQUIREMENT_RE.fullmatch(self.requirement):
            raise ValueError(f"wheel {self.requirement!r} is not pinned as name==version")
        if not _SHA256_RE.fullmatch(self.sha256):
            raise ValueError(f"wheel {self.requirement}: {self.sha256!r} is not a sha256 hex digest")


@dataclass(frozen=True)
class KernelSpec:
    """A Jupyter kernelspec written to /usr/local/share/jupyter/kernels/<name>/kernel.json."""

    name: str
    display_name: str
    language: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not _WORD_RE.fullmatch(self.name):
            raise ValueError(f"kernelspec name {self.name!r} is not a plain lowercase name")

    def kernel_json(self) -> dict[str, object]:
        spec: dict[str, object] = {
            "argv": list(self.argv),
            "display_name": self.display_name,
            "language": self.language,
        }
        if self.env:
            spec["env"] = dict(self.env)
        return spec


@dataclass(frozen=True)
class Recipe:
    name: str
    suite: str
    packages: tuple[str, ...]
    variant: str = "minbase"
    components: tuple[str, ...] = ("main",)
    dpkg_options: tuple[str, ...] = SLIM_DPKG_OPTIONS
    user: SandboxUser = field(default_factory=SandboxUser)
    wheels: tuple[Wheel, ...] = ()
    kernelspecs: tuple[KernelSpec, ...] = ()
    # Byte-compiled at build time (inside the image, by its own python3), so
    # the first import in a sandbox does not write (or fail to write) .pyc files.
    compile_dirs: tuple[str, ...] = ()
    # Run in the image as the sandbox user after everything is installed, to
    # leave caches in its home (matplotlib's font list takes seconds to build).
    user_warmups: tuple[tuple[str, ...], ...] = ()
    # Image config. No User: qbox picks the user for each exec.
    env: tuple[str, ...] = (f"PATH={SANDBOX_PATH}",)
    working_dir: str = "/home/user"
    cmd: tuple[str, ...] = ("/bin/bash",)
    version: int = RECIPE_VERSION

    def __post_init__(self) -> None:
        # These end up in argv and in cache paths; refuse anything odd early.
        for word in (self.name, self.suite, self.variant, *self.components):
            if not _WORD_RE.fullmatch(word):
                raise ValueError(f"recipe word {word!r} is not a plain lowercase name")
        for package in self.packages:
            if not _PACKAGE_RE.fullmatch(package):
                raise ValueError(f"{package!r} is not a Debian package name")
        for directory in self.compile_dirs:
            if not directory.startswith("/") or ".." in directory.split("/"):
                raise ValueError(f"compile dir {directory!r} is not an absolute path")

    def key(self) -> str:
        """Stable id of what this recipe builds: ``<name>-<16 hex>``."""
        fields = asdict(self)
        # Package order and repeats do not change the image, so not the key.
        fields["packages"] = sorted(set(self.packages))
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return f"{self.name}-{hashlib.sha256(canonical.encode()).hexdigest()[:16]}"


PYTHON_RECIPE = Recipe(
    name="python",
    suite="bookworm",
    packages=(
        "bash",
        "ca-certificates",
        "coreutils",
        "curl",
        "less",
        "procps",
        "python3",
        "python3-pip",
        "python3-venv",
        # `python` on PATH, as users (and the API reference's examples) expect.
        "python-is-python3",
        # Code interpreter: Jupyter kernels and the usual data-analysis stack.
        "python3-ipykernel",
        "python3-jupyter-client",
        "python3-numpy",
        "python3-pandas",
        "python3-matplotlib",
        # bash_kernel's dependencies (bash_kernel itself is a wheel below).
        "python3-pexpect",
        "python3-filetype",
    ),
    wheels=(Wheel("bash_kernel==0.10.0", "da28513230f5307c7a49e87352366304dc52b66faa207d6caed1b2bdec03c1fa"),),
    # Debian's python3-ipykernel ships the python3 kernelspec itself.
    kernelspecs=(
        KernelSpec(
            name="bash",
            display_name="Bash",
            language="bash",
            argv=("python3", "-m", "bash_kernel", "-f", "{connection_file}"),
            # As bash_kernel's own installer writes it.
            env=(("PS1", "$"),),
        ),
    ),
    compile_dirs=("/usr/lib/python3/dist-packages", "/usr/lib/python3.11", "/usr/local/lib/python3.11"),
    user_warmups=(("python3", "-c", "import matplotlib.pyplot"),),
    env=(f"PATH={SANDBOX_PATH}", "MPLBACKEND=Agg"),
)
