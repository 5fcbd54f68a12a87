"""Finding the Debian mirror this host already uses, from its apt sources.

mmdebstrap given no mirror uses deb.debian.org (checked: it does *not* read
the host's sources), which a company machine may not reach. So the base
image is built from the host's own entries for the recipe's suite and its
``-updates`` and ``-security`` companions, and the image keeps them as its
``sources.list`` so ``apt-get install`` inside a sandbox uses the same mirror.

Both formats apt reads are understood: one-line ``sources.list`` / ``*.list``
and deb822 ``*.sources``. Files with other suffixes are ignored, as apt does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_APT_DIR = Path("/etc/apt")
_USABLE_SCHEMES = ("http://", "https://")


@dataclass(frozen=True)
class AptSource:
    uri: str
    suite: str
    components: tuple[str, ...]
    # Kept from the host entry: an internal mirror without a signed Release
    # file is only usable with it. Other options (signed-by, arch) are left
    # to mmdebstrap, which adds signed-by itself from the host's keyrings.
    trusted: bool = False

    def one_line(self) -> str:
        options = "[trusted=yes] " if self.trusted else ""
        return f"deb {options}{self.uri} {self.suite} {' '.join(self.components)}"


@dataclass(frozen=True)
class _Entry:
    types: tuple[str, ...]
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    trusted: bool


def host_sources(suite: str, components: Sequence[str], apt_dir: Path = DEFAULT_APT_DIR) -> list[AptSource]:
    """The host's ``deb`` entries for ``suite`` (+ updates, security), or [] if none."""
    wanted_suites = (suite, f"{suite}-updates", f"{suite}-security")
    found: list[AptSource] = []
    for entry in _read_entries(apt_dir):
        if "deb" not in entry.types:
            continue
        comps = tuple(c for c in entry.components if c in components)
        if not comps:
            continue
        for uri in entry.uris:
            if not uri.startswith(_USABLE_SCHEMES):
                continue
            for entry_suite in entry.suites:
                source = AptSource(uri.rstrip("/"), entry_suite, comps, entry.trusted)
                if entry_suite in wanted_suites and source not in found:
                    found.append(source)
    # The main suite first: debootstrap (the fallback) can use only one mirror.
    found.sort(key=lambda s: wanted_suites.index(s.suite))
    return found


def _read_entries(apt_dir: Path) -> list[_Entry]:
    entries: list[_Entry] = []
    one_line_files = [apt_dir / "sources.list"]
    parts = apt_dir / "sources.list.d"
    if parts.is_dir():
        one_line_files += sorted(parts.glob("*.list"))
    for path in one_line_files:
        entries += parse_one_line(_read_text(path))
    if parts.is_dir():
        for path in sorted(parts.glob("*.sources")):
            entries += parse_deb822(_read_text(path))
    return entries


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def parse_one_line(text: str) -> list[_Entry]:
    """Entries of a one-line-style file: ``deb [opt=val …] URI SUITE [COMPONENT…]``."""
    entries = []
    for raw in text.splitlines():
        tokens = raw.split("#", 1)[0].split()
        if len(tokens) < 3:
            continue
        kind, rest = tokens[0], tokens[1:]
        options: dict[str, str] = {}
        if rest[0].startswith("["):
            option_tokens = []
            while rest:
                token = rest.pop(0)
                option_tokens.append(token)
                if token.endswith("]"):
                    break
            joined = " ".join(option_tokens).strip("[] ")
            options = _parse_options(joined.split())
        if len(rest) < 2:
            continue
        entries.append(
            _Entry(
                types=(kind,),
                uris=(rest[0],),
                suites=(rest[1],),
                components=tuple(rest[2:]),
                trusted=options.get("trusted", "").lower() == "yes",
            )
        )
    return entries


def parse_deb822(text: str) -> list[_Entry]:
    """Entries of a deb822 ``.sources`` file (stanzas separated by blank lines)."""
    entries = []
    for stanza in _stanzas(text.splitlines()):
        if stanza.get("enabled", "yes").lower() == "no":
            continue
        entries.append(
            _Entry(
                types=tuple(stanza.get("types", "").split()),
                uris=tuple(stanza.get("uris", "").split()),
                suites=tuple(stanza.get("suites", "").split()),
                components=tuple(stanza.get("components", "").split()),
                trusted=stanza.get("trusted", "").lower() == "yes",
            )
        )
    return entries


def _stanzas(lines: Iterable[str]) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last_key = ""
    for line in lines:
        if line.startswith("#"):
            continue
        if not line.strip():
            if current:
                stanzas.append(current)
            current, last_key = {}, ""
        elif line[0] in " \t":
            # A continuation line (e.g. an inline Signed-By key block).
            if last_key:
                current[last_key] += "\n" + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            last_key = key.strip().lower()
            current[last_key] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def _parse_options(tokens: Iterable[str]) -> dict[str, str]:
    options = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        if sep:
            options[key.strip().lower()] = value.strip()
    return options
