"""``qbox api-keys``: create (the secret is shown once), list, inspect, revoke and rotate API keys."""

from __future__ import annotations

import contextlib
import os
import tempfile
from datetime import timedelta
from typing import Any

import click

from qbox.cli.context import CliState, confirm_or_decline, json_option, pass_state
from qbox.core.errors import QboxError
from qbox.core.timefmt import utcnow
from qbox.sdk import ApiKeyInfo, ApiKeys, CreatedApiKey

KEY_COLUMNS = ("ID", "NAME", "PREFIX", "SCOPES", "USER", "STATUS", "LAST USED", "EXPIRES")
NOT_SHOWN_AGAIN = "Save this secret now: it is not shown again."


def _row(key: ApiKeyInfo) -> list[Any]:
    return [key.id, key.name, key.prefix, list(key.scopes), key.user_email or key.user_id, key.status,
            key.last_used_at or "never", key.expires_at or "never"]  # fmt: skip


def _show(state: CliState, key: ApiKeyInfo) -> None:
    if state.json:
        state.emit_json(key.raw)
        return
    state.emit_fields([
        ("ID", key.id), ("Name", key.name), ("Prefix", key.prefix), ("Scopes", list(key.scopes)),
        ("User", key.user_email), ("User id", key.user_id), ("Status", key.status), ("Created", key.created_at),
        ("Expires", key.expires_at or "never"), ("Last used", key.last_used_at or "never"),
        ("Revoked", key.revoked_at),
    ])  # fmt: skip


def _check_writable(path: str | None) -> None:
    """Fail before a key exists, not after: a secret that cannot be saved is lost."""
    if path is None:
        return
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) or not os.path.isdir(directory) or not os.access(directory, os.W_OK | os.X_OK):
        raise click.BadParameter(f"cannot write a file at {path!r}", param_hint="--output-file")


def write_secret(path: str, secret: str) -> None:
    """Replace ``path`` atomically with a file only its owner can read (mkstemp creates it 0600)."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".qbox-key-")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secret)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _deliver(state: CliState, created: CreatedApiKey, output_file: str | None, **extra: Any) -> None:
    """Hand over the secret exactly once: into ``output_file``, or on stdout."""
    key = created.key
    if output_file is not None:
        try:
            write_secret(output_file, created.secret)
        except OSError as exc:
            raise QboxError(
                f"created API key {key.id} but could not write {output_file}: {exc}; "
                f"revoke it with `qbox api-keys revoke {key.id}`",
                code="write_failed",
                details={"apiKeyId": key.id},
                status=0,
            ) from exc
        state.env.err(f"Wrote the secret of {key.id} to {output_file} (readable by you only); it is not shown again.")
    else:
        state.env.err(NOT_SHOWN_AGAIN)
    if state.json:
        where = {"secretFile": output_file} if output_file is not None else {"secret": created.secret}
        state.emit_json({"key": key.raw, **where, **extra})
    else:
        state.env.out(key.id if output_file is not None else created.secret)


def _scope_list(value: str) -> list[str]:
    scopes = [s.strip() for s in value.split(",") if s.strip()]
    if not scopes:
        raise click.BadParameter("give at least one scope, e.g. sandboxes:read,sandboxes:create", param_hint="--scopes")
    return scopes


@click.group("api-keys")
def api_keys() -> None:
    """Create, list, revoke and rotate API keys."""


@api_keys.command("list")
@click.option("--user", "user_id", metavar="ID", help="Only this user's keys (admins see everyone's).")
@json_option
@pass_state
def list_(state: CliState, user_id: str | None) -> None:
    """List API keys (never their secrets)."""
    found = ApiKeys.list(user_id, config=state.config())
    if state.json:
        state.emit_json([k.raw for k in found])
    else:
        state.emit_table(KEY_COLUMNS, [_row(k) for k in found])


@api_keys.command("get")
@click.argument("key_id", metavar="ID")
@json_option
@pass_state
def get(state: CliState, key_id: str) -> None:
    """Show one API key."""
    _show(state, ApiKeys.get(key_id, config=state.config()))


@api_keys.command("create")
@click.option("--name", required=True, help="What the key is for.")
@click.option("--scopes", required=True, metavar="A,B", help="Comma-separated, e.g. sandboxes:read,sandboxes:create.")
@click.option("--expires-in", type=click.IntRange(min=1), metavar="DAYS", help="Expire after N days (default: never).")
@click.option("--user", "user_id", metavar="ID", help="For this user instead of yourself (admins).")
@click.option("--output-file", metavar="FILE", help="Write the secret to FILE (mode 0600) instead of stdout.")
@json_option
@pass_state
def create(state: CliState, name: str, scopes: str, expires_in: int | None, user_id: str | None,
           output_file: str | None) -> None:  # fmt: skip
    """Create an API key (yours unless --user); its secret is printed once."""
    scope_list = _scope_list(scopes)
    _check_writable(output_file)
    expires_at = utcnow() + timedelta(days=expires_in) if expires_in else None
    created = ApiKeys.create(name, scope_list, expires_at, user_id=user_id, config=state.config())
    state.env.err(f"Created API key {created.key.id} ({name}).")
    _deliver(state, created, output_file)


@api_keys.command("revoke")
@click.argument("key_id", metavar="ID")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_state
def revoke(state: CliState, key_id: str, yes: bool) -> None:
    """Revoke an API key at once (asks first unless -y or QBOX_ASSUME_YES=1)."""
    confirm_or_decline(state, f"Revoke API key {key_id}? Anything using it stops working.",
                       yes=yes, consequence="nothing revoked")  # fmt: skip
    key = ApiKeys.revoke(key_id, config=state.config())
    if state.json:
        state.emit_json(key.raw)
    else:
        state.env.out(f"revoked {key.id}")


@api_keys.command("rotate")
@click.argument("key_id", metavar="ID")
@click.option("--output-file", metavar="FILE", help="Write the new secret to FILE (mode 0600) instead of stdout.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_state
def rotate(state: CliState, key_id: str, output_file: str | None, yes: bool) -> None:
    """Replace a key: a new one with its name, scopes and owner; the old one revoked."""
    _check_writable(output_file)
    confirm_or_decline(state, f"Rotate API key {key_id}? It stops working now; the new secret is shown once.",
                       yes=yes, consequence="nothing rotated")  # fmt: skip
    created = ApiKeys.rotate(key_id, config=state.config())
    state.env.err(f"Rotated {key_id}: new key {created.key.id} ({created.key.name}); {key_id} is revoked.")
    _deliver(state, created, output_file, revoked=key_id)
