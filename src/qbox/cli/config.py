"""``qbox config``: read and edit the config file by dotted path (``profiles.<name>[.<key>]``).

API keys are set only through ``qbox auth login``, which checks them first;
``config view`` shows them cut short unless ``--show-secrets``.
"""

from __future__ import annotations

from typing import Any

import click

from qbox.cli.config_file import PROFILE_FIELDS, SECRET_FIELD, ConfigFile, config_error, redacted
from qbox.cli.context import CliState, json_option, pass_state
from qbox.cli.output import render
from qbox.core.errors import QboxError

PATH_HELP = "profiles.<name>.<key>, or active_profile"


def _missing(path: str, file: ConfigFile) -> QboxError:
    return QboxError(f"{path} is not set in {file.path}", code="not_found", status=404)


def _parts(path: str) -> list[str]:
    parts = path.split(".")
    if not all(parts):
        raise click.BadParameter(f"expected {PATH_HELP}, got {path!r}", param_hint="PATH")
    return parts


def coerce(value: str) -> Any:
    """``true``/``false`` and numbers become YAML's bool and number; anything else stays text."""
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


@click.group("config")
def config() -> None:
    """View and edit the config file (profiles: base_url, api_key, verify_tls, request_timeout)."""


@config.command("view")
@click.option("--show-secrets", is_flag=True, help="Show whole API keys.")
@json_option
@pass_state
def view(state: CliState, show_secrets: bool) -> None:
    """Print the config file (YAML; JSON with -o json), API keys cut short."""
    document = state.config_file.document()
    state.env.out(render(document if show_secrets else redacted(document),
                         "json" if state.explicit_format == "json" else "yaml"))


@config.command("path")
@pass_state
def path_(state: CliState) -> None:
    """Print where the config file is (it may not exist yet)."""
    state.env.out(str(state.config_file.path))


@config.command("get")
@click.argument("path")
@pass_state
def get(state: CliState, path: str) -> None:
    """Print the value at PATH (exit 4 when unset); API keys cut short."""
    file = state.config_file
    node: Any = redacted(file.document())
    for part in _parts(path):
        if not isinstance(node, dict) or node.get(part) is None:
            raise _missing(path, file)
        node = node[part]
    if isinstance(node, dict | list):
        state.env.out(render(node, "json" if state.explicit_format == "json" else "yaml"))
    else:
        state.env.out(str(node).lower() if isinstance(node, bool) else str(node))


@config.command("set")
@click.argument("path")
@click.argument("value")
@pass_state
def set_(state: CliState, path: str, value: str) -> None:
    """Set PATH to VALUE (not an API key: `qbox auth login` checks and saves those)."""
    parts = _parts(path)
    file = state.config_file
    if parts[-1] == SECRET_FIELD:
        raise click.UsageError("API keys are set with `qbox auth login` (it checks them first), not `config set`")
    if parts == ["active_profile"]:
        if value not in file.profiles:
            raise config_error(f"no profile {value!r} in {file.path}")
        file.active_profile = value
    elif len(parts) == 3 and parts[0] == "profiles":
        _, name, key = parts
        coerced = coerce(value)
        types = PROFILE_FIELDS.get(key)
        if types is not None and not isinstance(coerced, types):
            if key == "base_url":
                coerced = value
            else:
                raise click.BadParameter(f"{key} must be {' or '.join(t.__name__ for t in types)}", param_hint="VALUE")
        file.profiles.setdefault(name, {})[key] = coerced
    else:
        raise click.BadParameter(f"expected {PATH_HELP}, got {path!r}", param_hint="PATH")
    file.save()


@config.command("unset")
@click.argument("path")
@pass_state
def unset(state: CliState, path: str) -> None:
    """Remove PATH: one key of a profile, or a whole profile (exit 4 when unset)."""
    parts = _parts(path)
    file = state.config_file
    if parts == ["active_profile"]:
        if file.active_profile is None:
            raise _missing(path, file)
        file.active_profile = None
    elif len(parts) == 2 and parts[0] == "profiles":
        if not file.delete_profile(parts[1]):
            raise _missing(path, file)
    elif len(parts) == 3 and parts[0] == "profiles":
        values = file.profiles.get(parts[1])
        if values is None or values.pop(parts[2], None) is None:
            raise _missing(path, file)
    else:
        raise click.BadParameter(f"expected {PATH_HELP}, got {path!r}", param_hint="PATH")
    file.save()
