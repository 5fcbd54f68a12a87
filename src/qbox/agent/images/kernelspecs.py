"""The Jupyter kernels an image offers, read from its unpacked rootfs.

A template whose image has kernelspecs advertises the ``code-interpreter``
service. The rootfs is untrusted like any sandbox's: everything is read
through ``RootDir`` (resolved inside the root, regular files only, bounded).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qbox.agent.openat2 import RootDir

# Where jupyter_client looks system-wide (sys.prefix is /usr on Debian).
KERNEL_DIRS = ("/usr/local/share/jupyter/kernels", "/usr/share/jupyter/kernels")
_MAX_SPEC_BYTES = 64 * 1024
_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@dataclass(frozen=True)
class KernelSpecInfo:
    name: str
    language: str
    display_name: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "language": self.language, "displayName": self.display_name}


def parse_spec(name: str, raw: bytes) -> KernelSpecInfo | None:
    try:
        spec: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(spec, dict) or not isinstance(spec.get("argv"), list):
        return None
    language = spec.get("language")
    display = spec.get("display_name", name)
    if not isinstance(language, str) or not language or not isinstance(display, str):
        return None
    return KernelSpecInfo(name, language.lower()[:64], display[:200])


def find_kernelspecs(rootfs: Path) -> list[KernelSpecInfo]:
    """Every valid kernelspec in the rootfs; an earlier directory wins on a name clash."""
    found: dict[str, KernelSpecInfo] = {}
    with RootDir(rootfs) as root:
        for directory in KERNEL_DIRS:
            for name in root.list_dir(directory):
                if name in found or not _NAME_RE.match(name):
                    continue
                raw = root.read_bytes(f"{directory}/{name}/kernel.json", _MAX_SPEC_BYTES)
                if raw is not None and (spec := parse_spec(name, raw)) is not None:
                    found[name] = spec
    return sorted(found.values(), key=lambda s: s.name)
