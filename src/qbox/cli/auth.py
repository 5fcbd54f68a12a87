"""``qbox auth``: log in to a server under a profile, whose API key this is, and the profiles kept."""

from __future__ import annotations

import sys
from dataclasses import replace

import click

from qbox.cli.config_file import DEFAULT_PROFILE, config_error, mask_key
from qbox.cli.context import CliState, confirm_or_decline, json_option, pass_state
from qbox.core.errors import QboxError
from qbox.sdk import System

PROFILE_COLUMNS = ("", "PROFILE", "BASE URL", "API KEY")


def _not_found(message: str) -> QboxError:
    return QboxError(message, code="not_found", status=404)


@click.group("auth")
def auth() -> None:
    """Log in (profiles in the config file), check the API key, manage profiles."""


@auth.command("login")
@click.option("--base-url", metavar="URL", help="The control plane (default: the one in use now).")
@click.option("--api-key", metavar="KEY|-", help="The key, or - to read it from stdin (else asked for, hidden).")
@click.option("-p", "--profile", "profile_option", metavar="NAME", help="Save under this profile (default: default).")
@click.option("--no-verify", is_flag=True, help="Save without checking the key (GET /v1/auth/me).")
@json_option
@pass_state
def login(state: CliState, base_url: str | None, api_key: str | None, profile_option: str | None,
          no_verify: bool) -> None:
    """Check an API key against a server and save both as a profile, which becomes the active one."""
    explicit_profile = state.profile or state.env.environ.get("QBOX_PROFILE", "").strip() or None
    name = profile_option or explicit_profile or DEFAULT_PROFILE
    file = state.config_file
    values = dict(file.profiles.get(name, {}))
    current = state.config(values)  # flag > environment > that profile > default
    key = _read_key(state, api_key)
    verify = replace(current, api_key=key, base_url=(base_url or current.base_url or "").rstrip("/"))
    identity = None if no_verify else System.me(config=verify)
    values.update({"base_url": verify.base_url, "api_key": key})
    if not state.verify_tls:
        values["verify_tls"] = False
    file.profiles[name] = values
    file.active_profile = name
    file.save()
    if state.json:
        state.emit_json({"profile": name, "baseUrl": values["base_url"], "apiKey": mask_key(key),
                         "configPath": str(file.path), "verified": identity is not None,
                         **({"apiKeyId": identity.api_key_id, "scopes": list(identity.scopes)} if identity else {})})
        return
    if identity is not None:
        who = identity.email or identity.id or identity.api_key_id
        state.info(f"Authenticated to {values['base_url']} as {who} (scopes: {', '.join(identity.scopes) or '-'}).")
    state.info(f"Saved profile {name!r} to {file.path}; it is the active profile.")


def _read_key(state: CliState, api_key: str | None) -> str:
    """The key from --api-key, stdin (``-``), or a hidden prompt at a terminal; never echoed."""
    if api_key == "-":
        key = sys.stdin.read().strip()
    elif api_key or state.api_key:
        key = (api_key or state.api_key or "").strip()
    elif state.env.stdin_is_tty():
        key = str(click.prompt("API key", hide_input=True, err=True)).strip()
    else:
        raise click.UsageError("no API key: pass --api-key KEY, or --api-key - to read it from stdin")
    if not key:
        raise click.UsageError("the API key is empty")
    if any(ch.isspace() for ch in key):
        raise click.UsageError("an API key has no spaces or line breaks (give one key)")
    return key


@auth.command("me")
@json_option
@pass_state
def me(state: CliState) -> None:
    """Show the key's id, owner and scopes."""
    identity = System.me(config=state.config())
    state.emit_item(identity.raw, [
        ("API key", identity.api_key_id),
        ("User", identity.id),
        ("Email", identity.email),
        ("Scopes", identity.scopes),
    ])  # fmt: skip


@auth.command("status")
@json_option
@pass_state
def status(state: CliState) -> None:
    """Say which profile, server and key are in use, and check the key there (exit 3 if it fails)."""
    config = state.config()
    identity = System.me(config=config)
    if state.json:
        state.emit_json(
            {
                "profile": state.profile_name,
                "baseUrl": config.base_url,
                "apiKey": mask_key(config.api_key),
                "authenticated": True,
                **identity.raw,
            }
        )
        return
    who = identity.email or identity.id or identity.api_key_id
    state.env.out(f"Authenticated to {config.base_url} as {who}.")
    state.emit_fields(
        [
            ("Profile", state.profile_name),
            ("API key", mask_key(config.api_key)),
            ("Key id", identity.api_key_id),
            ("Scopes", identity.scopes),
        ]
    )


@auth.command("logout")
@click.option("--all", "every", is_flag=True, help="Remove every profile.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_state
def logout(state: CliState, every: bool, yes: bool) -> None:
    """Forget the profile in use (or --all) on this machine; the key itself stays valid on the server."""
    file = state.config_file
    if every:
        confirm_or_decline(state, f"Remove all {len(file.profiles)} profiles?", yes=yes, consequence="nothing removed")
        removed = sorted(file.profiles)
        file.profiles.clear()
        file.active_profile = None
    else:
        name = state.profile_name
        if name not in file.profiles:
            raise _not_found(f"no profile {name!r} in {file.path}")
        confirm_or_decline(state, f"Remove profile {name!r}?", yes=yes, consequence="nothing removed")
        file.delete_profile(name)
        removed = [name]
    file.save()
    if state.json:
        state.emit_json({"removed": removed, "activeProfile": file.active_profile})
        return
    state.env.out(f"removed {', '.join(removed) or 'no profiles'}")
    state.info("The API key still works on the server: revoke it there with `qbox api-keys revoke ID`.")


@auth.group("profiles")
def profiles() -> None:
    """The profiles in the config file: list them, pick the active one, delete one."""


@profiles.command("list")
@json_option
@pass_state
def profiles_list(state: CliState) -> None:
    """List profiles; * marks the active one."""
    file = state.config_file
    data = [{"profile": name, "baseUrl": values.get("base_url"), "active": name == file.active_profile,
             "apiKey": mask_key(values.get("api_key"))} for name, values in file.profiles.items()]
    state.emit(data, PROFILE_COLUMNS, [["*" if p["active"] else " ", p["profile"], p["baseUrl"], p["apiKey"]]
                                       for p in data])


@profiles.command("use")
@click.argument("name")
@pass_state
def profiles_use(state: CliState, name: str) -> None:
    """Make NAME the active profile."""
    file = state.config_file
    if name not in file.profiles:
        raise config_error(f"no profile {name!r} in {file.path} (see: qbox auth profiles list)")
    file.active_profile = name
    file.save()
    state.info(f"active profile: {name}")


@profiles.command("delete")
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_state
def profiles_delete(state: CliState, name: str, yes: bool) -> None:
    """Delete profile NAME (exit 4 when there is none)."""
    file = state.config_file
    if name not in file.profiles:
        raise _not_found(f"no profile {name!r} in {file.path}")
    confirm_or_decline(state, f"Delete profile {name!r}?", yes=yes, consequence="nothing deleted")
    file.delete_profile(name)
    file.save()
    active = f"; active profile: {file.active_profile}" if file.active_profile else ""
    state.info(f"deleted profile {name!r}{active}")
