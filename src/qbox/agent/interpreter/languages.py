"""Which languages a sandbox's kernels offer, under which names a client may ask for them.

Pure functions over the kernelspecs (``images/kernelspecs.py`` reads them
from the rootfs; the kernel host reports the same list once it runs).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from qbox.agent.images.kernelspecs import KernelSpecInfo
from qbox.core.errors import LanguageNotSupportedError

DEFAULT_LANGUAGE = "python"
# Other names clients use for a language (the language itself and its
# kernels' names are accepted too).
ALIASES: dict[str, tuple[str, ...]] = {
    "python": ("python3", "py"),
    "bash": ("sh", "shell"),
    "javascript": ("js", "node"),
    "typescript": ("ts",),
    "r": (),
    "julia": (),
}
# Kernel names preferred when a language has several.
_PREFERRED_KERNELS = ("python3", "bash", "javascript", "ir")


@dataclass(frozen=True)
class Language:
    language: str
    kernel_name: str
    aliases: tuple[str, ...]
    is_default: bool


def _kernel_rank(spec: KernelSpecInfo) -> tuple[int, str]:
    if spec.name in _PREFERRED_KERNELS:
        return (0, spec.name)
    if spec.name == spec.language:
        return (1, spec.name)
    return (2, spec.name)


def languages_of(specs: Iterable[KernelSpecInfo]) -> list[Language]:
    """One entry per language (its preferred kernel), the default first."""
    by_language: dict[str, KernelSpecInfo] = {}
    for spec in sorted(specs, key=_kernel_rank):
        by_language.setdefault(spec.language, spec)
    if not by_language:
        return []
    default = DEFAULT_LANGUAGE if DEFAULT_LANGUAGE in by_language else min(by_language)
    result = []
    for name, spec in by_language.items():
        aliases = [a for a in ALIASES.get(name, ()) if a not in by_language]
        if spec.name != name and spec.name not in aliases and spec.name not in by_language:
            aliases.append(spec.name)
        result.append(Language(name, spec.name, tuple(aliases), name == default))
    result.sort(key=lambda lang: (not lang.is_default, lang.language))
    return result


def resolve(languages: list[Language], asked: str | None) -> Language:
    """The language ``asked`` names (None: the default); ``language_not_supported`` if none."""
    if asked is None or not asked.strip():
        for language in languages:
            if language.is_default:
                return language
    else:
        wanted = asked.strip().lower()
        for language in languages:
            if wanted == language.language:
                return language
        for language in languages:
            if wanted in language.aliases:
                return language
    supported = [language.language for language in languages]
    raise LanguageNotSupportedError(
        f"language {asked!r} is not supported in this sandbox"
        + (f" (supported: {', '.join(supported)})" if supported else ""),
        details={"language": asked or "", "supportedLanguages": supported})


def specs_from_host(kernels: object) -> list[KernelSpecInfo]:
    """The ``kernels`` list of the host's ``ready`` line, checked (it is untrusted)."""
    specs = []
    if isinstance(kernels, list):
        for item in kernels[:256]:
            if not isinstance(item, dict):
                continue
            name, language = item.get("name"), item.get("language")
            display = item.get("displayName", name)
            if isinstance(name, str) and isinstance(language, str) and name and language:
                specs.append(KernelSpecInfo(name[:64], language.lower()[:64],
                                            str(display)[:200]))
    return specs
