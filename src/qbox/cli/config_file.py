"""The CLI's profiles: ``$XDG_CONFIG_HOME/qbox/config.yaml``, the file the published CLI keeps too.

Its shape is WIRE_PROTOCOL.md §8.3, so either CLI reads what the other wrote::

    active_profile: default
    profiles:
      default: {base_url: http://…, api_key: qbox_…, verify_tls: true, request_timeout: 30}

It holds API keys: it is written 0600 (a temporary file renamed over it, so a
reader never sees half of it), and a file any group or other user may touch
is refused (``insecure_config``, exit 2) rather than trusted.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from qbox.core.errors import QboxError

DEFAULT_PROFILE = "default"
SECRET_FIELD = "api_key"
# The fields a profile's connection takes, and the types each may have in the file.
PROFILE_FIELDS: dict[str, tuple[type, ...]] = {
    "base_url": (str,),
    "api_key": (str,),
    "verify_tls": (bool,),
    "request_timeout": (int, float),
}
KEY_SHOWN_CHARS = 9  # "qbox_" and four more: enough to tell keys apart


def mask_key(key: str | None) -> str | None:
    if not key:
        return None
    return key[:KEY_SHOWN_CHARS] + "…" if len(key) > KEY_SHOWN_CHARS else key


def config_path(environ: Mapping[str, str]) -> Path:
    """Where the file is: the XDG config dir (``%APPDATA%`` on Windows), as the published CLI looks."""
    if os.name == "nt":
        return Path(environ.get("APPDATA") or Path.home() / "AppData" / "Roaming") / "qbox" / "config.yaml"
    xdg = environ.get("XDG_CONFIG_HOME")
    home = environ.get("HOME")
    base = Path(xdg) if xdg else (Path(home) if home else Path.home()) / ".config"
    return base / "qbox" / "config.yaml"


def config_error(message: str, code: str = "invalid_config") -> QboxError:
    return QboxError(message, code=code, status=0)


def _checked_profiles(path: Path, raw: Any) -> dict[str, dict[str, Any]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(v, dict | None) for v in raw.values()):
        raise config_error(f"{path}: 'profiles' must map names to mappings")
    profiles: dict[str, dict[str, Any]] = {str(name): dict(values or {}) for name, values in raw.items()}
    for name, values in profiles.items():
        for key, types in PROFILE_FIELDS.items():
            value = values.get(key)
            if value is not None and (not isinstance(value, types) or (bool not in types and isinstance(value, bool))):
                raise config_error(f"{path}: profiles.{name}.{key} has the wrong type ({type(value).__name__})")
    return profiles


@dataclass
class ConfigFile:
    path: Path
    active_profile: str | None = None
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> ConfigFile:
        """The file at ``path``; an empty one when there is none yet."""
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            return cls(path)
        if os.name != "nt" and mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise config_error(f"{path} may be read or changed by other users; fix it with: chmod 600 {path}",
                               code="insecure_config")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise config_error(f"{path} is not valid YAML: {exc}") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise config_error(f"{path} must hold a mapping (active_profile, profiles)")
        active = data.get("active_profile")
        if active is not None and not isinstance(active, str):
            raise config_error(f"{path}: active_profile must be a profile's name")
        return cls(path, active, _checked_profiles(path, data.get("profiles")))

    def document(self) -> dict[str, Any]:
        return {"active_profile": self.active_profile, "profiles": self.profiles}

    def save(self) -> None:
        """Write the whole file, 0600, through ``config.yaml.tmp`` renamed over it."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        text = yaml.safe_dump(self.document(), default_flow_style=False, sort_keys=False, allow_unicode=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.unlink(missing_ok=True)  # created afresh below, so no other owner's mode or link is kept
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def delete_profile(self, name: str) -> bool:
        """Remove ``name``; when it was the active one, the next profile (if any) becomes active."""
        existed = self.profiles.pop(name, None) is not None
        if self.active_profile == name:
            self.active_profile = next(iter(self.profiles), None)
        return existed


def redacted(document: dict[str, Any]) -> dict[str, Any]:
    """The document with every profile's API key cut to its first characters."""
    profiles = {
        name: {k: (mask_key(v) if k == SECRET_FIELD and isinstance(v, str) else v) for k, v in values.items()}
        for name, values in document.get("profiles", {}).items()
    }
    return {**document, "profiles": profiles}
