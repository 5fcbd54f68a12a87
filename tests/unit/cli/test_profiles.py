"""Profiles: ``auth login|logout|profiles``, ``config view|get|set|unset``, the config file's mode and
format (WIRE_PROTOCOL.md §8.3), and where the connection comes from (flag > env > profile > default)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from qbox.cli.exit_codes import ExitCode
from qbox.sdk import ConnectionConfig
from qbox.sdk._config import DEFAULT_BASE_URL
from tests.unit.cli.conftest import Cli
from tests.unit.sdk.fakes import error, reply

ME = {"id": "usr_1", "email": "ada@example.com", "apiKeyId": "key_1", "scopes": ["sandboxes:*"]}
KEY = "qbox_profilekey123"
NO_ENV = {"QBOX_API_KEY": "", "QBOX_BASE_URL": ""}  # only the file speaks


def config_file(cli: Cli) -> Path:
    return Path(cli.environ["XDG_CONFIG_HOME"]) / "qbox" / "config.yaml"


def read(cli: Cli) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(config_file(cli).read_text())
    return data


def write(cli: Cli, document: dict[str, Any], mode: int = 0o600) -> Path:
    path = config_file(cli)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    path.chmod(mode)
    return path


def two_profiles(cli: Cli) -> None:
    write(cli, {"active_profile": "work", "profiles": {
        "work": {"base_url": "http://work.test", "api_key": "qbox_workkey0001", "request_timeout": 7},
        "home": {"base_url": "http://home.test", "api_key": "qbox_homekey0002"},
    }})  # fmt: skip


def test_login_checks_the_key_and_saves_a_0600_file_the_published_cli_reads(cli: Cli) -> None:
    cli.server.on("GET", "/v1/auth/me", reply(200, ME))
    done = cli("auth", "login", "--base-url", "http://qbox.test/", "--api-key", KEY, tty=True, environ=NO_ENV)
    assert done.exit_code == 0, done.output
    assert cli.server.last("GET", "/v1/auth/me").headers["authorization"] == f"Bearer {KEY}"
    assert "Authenticated to http://qbox.test as ada@example.com" in done.stderr
    assert KEY not in done.stdout + done.stderr
    path = config_file(cli)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not path.with_name("config.yaml.tmp").exists()
    assert read(cli) == {"active_profile": "default",
                         "profiles": {"default": {"base_url": "http://qbox.test", "api_key": KEY}}}
    # The saved profile is what the next command uses, with no environment at all.
    cli.server.on("GET", "/v1/sandboxes", reply(200, []))
    assert cli("sandboxes", "list", environ=NO_ENV).exit_code == 0
    assert cli.server.last("GET", "/v1/sandboxes").headers["authorization"] == f"Bearer {KEY}"


def test_login_reads_the_key_from_stdin_or_a_hidden_prompt(cli: Cli) -> None:
    cli.server.on("GET", "/v1/auth/me", reply(200, ME))
    piped = cli("auth", "login", "--api-key", "-", "-p", "piped", input=f"{KEY}\n", environ=NO_ENV)
    assert piped.exit_code == 0, piped.output
    assert read(cli)["profiles"]["piped"] == {"base_url": DEFAULT_BASE_URL, "api_key": KEY}
    asked = cli("auth", "login", "-p", "asked", stdin_tty=True, input="qbox_askedkey999\n", environ=NO_ENV)
    assert asked.exit_code == 0, asked.output
    assert "qbox_askedkey999" not in asked.output  # hide_input: never echoed
    assert read(cli)["profiles"]["asked"]["api_key"] == "qbox_askedkey999"
    assert read(cli)["active_profile"] == "asked"
    no_key = cli("auth", "login", environ=NO_ENV)  # no terminal to ask on
    assert no_key.exit_code == ExitCode.USAGE and "--api-key -" in no_key.stderr
    assert cli("auth", "login", "--api-key", "-", input="\n", environ=NO_ENV).exit_code == ExitCode.USAGE


def test_a_refused_key_is_not_saved_and_no_verify_saves_without_asking(cli: Cli) -> None:
    cli.server.on("GET", "/v1/auth/me", error(401, "unauthenticated", "invalid API key"))
    refused = cli("auth", "login", "--api-key", KEY, environ=NO_ENV)
    assert refused.exit_code == ExitCode.AUTH
    assert not config_file(cli).exists()
    saved = cli("-o", "json", "auth", "login", "--api-key", KEY, "--no-verify", "-p", "later", environ=NO_ENV)
    assert saved.exit_code == 0
    assert json.loads(saved.stdout) == {"profile": "later", "baseUrl": DEFAULT_BASE_URL, "apiKey": "qbox_prof…",
                                        "configPath": str(config_file(cli)), "verified": False}
    assert len(cli.server.seen) == 1


def test_login_keeps_the_profiles_other_fields_and_no_tls_verify_is_remembered(cli: Cli) -> None:
    write(cli, {"active_profile": "x", "profiles": {"x": {"base_url": "http://x.test", "request_timeout": 9}}})
    done = cli("--no-tls-verify", "auth", "login", "-p", "x", "--api-key", KEY, "--no-verify", environ=NO_ENV)
    assert done.exit_code == 0, done.output
    assert read(cli)["profiles"]["x"] == {"base_url": "http://x.test", "request_timeout": 9, "api_key": KEY,
                                          "verify_tls": False}


def test_a_file_others_may_read_is_refused(cli: Cli) -> None:
    path = write(cli, {"active_profile": "default", "profiles": {"default": {"api_key": KEY}}}, mode=0o644)
    for args in (("sandboxes", "list"), ("auth", "profiles", "list"), ("config", "view")):
        refused = cli(*args, tty=True)
        assert refused.exit_code == ExitCode.USAGE, args
        assert refused.stderr.startswith("error: insecure_config: ") and f"chmod 600 {path}" in refused.stderr
    as_json = json.loads(cli("sandboxes", "list", "--json").stdout)
    assert as_json["error"]["code"] == "insecure_config" and as_json["error"]["exitCode"] == 2
    path.chmod(0o600)
    assert cli("auth", "profiles", "list").exit_code == 0


def test_a_broken_file_is_a_usage_error(cli: Cli) -> None:
    path = config_file(cli)
    path.parent.mkdir(parents=True)
    for text in ("profiles: [", "- a list\n", "profiles:\n  p: {request_timeout: soon}\n"):
        path.write_text(text)
        path.chmod(0o600)
        done = cli("auth", "profiles", "list", tty=True)
        assert done.exit_code == ExitCode.USAGE and "invalid_config" in done.stderr, text


def test_resolution_order_flag_then_env_then_profile_then_default(cli: Cli) -> None:
    two_profiles(cli)
    cli.server.on("GET", "/v1/system", reply(200, {"version": "1.1.0"}))

    def used(*args: str, **environ: str) -> tuple[str, str | None, float | None]:
        done = cli(*args, "system", environ={**NO_ENV, **environ})
        assert done.exit_code == 0, done.output
        seen = cli.server.seen[-1]
        return json.loads(done.stdout)["baseUrl"], seen.headers.get("authorization"), seen.timeout["read"]

    assert used() == ("http://work.test", "Bearer qbox_workkey0001", 7)  # the active profile
    assert used(QBOX_PROFILE="home") == ("http://home.test", "Bearer qbox_homekey0002", 30)
    assert used("-p", "home", QBOX_PROFILE="work")[0] == "http://home.test"  # the flag beats the env
    assert used(QBOX_BASE_URL="http://env.test", QBOX_API_KEY="qbox_envkey") == (
        "http://env.test", "Bearer qbox_envkey", 7)
    assert used("--base-url", "http://flag.test", "--api-key", "qbox_flagkey", "--request-timeout", "3",
                QBOX_BASE_URL="http://env.test", QBOX_API_KEY="qbox_envkey") == (
        "http://flag.test", "Bearer qbox_flagkey", 3)
    config_file(cli).unlink()
    assert used()[0] == DEFAULT_BASE_URL
    missing = cli("-p", "nope", "system", tty=True)
    assert missing.exit_code == ExitCode.USAGE and "no profile 'nope'" in missing.stderr


def test_the_sdk_fallback_sits_below_the_environment() -> None:
    below = ConnectionConfig(api_key="qbox_below", base_url="http://below.test", request_timeout=5, max_retries=1)
    resolved = ConnectionConfig.from_environ({"QBOX_BASE_URL": "http://env.test"}, fallback=below)
    assert (resolved.api_key, resolved.base_url, resolved.request_timeout, resolved.max_retries) == (
        "qbox_below", "http://env.test", 5, 1)
    explicit = ConnectionConfig.from_environ({"QBOX_MAX_RETRIES": "0"}, fallback=below, api_key="qbox_kw")
    assert (explicit.api_key, explicit.max_retries) == ("qbox_kw", 0)
    assert ConnectionConfig.from_environ({}).base_url == DEFAULT_BASE_URL


def test_status_names_the_profile_and_fails_with_3(cli: Cli) -> None:
    two_profiles(cli)
    cli.server.on("GET", "/v1/auth/me", reply(200, ME))
    done = cli("auth", "status", tty=True, environ=NO_ENV)
    assert done.exit_code == 0
    assert done.stdout.startswith("Authenticated to http://work.test as ada@example.com.")
    assert "Profile  work" in done.stdout and "qbox_work…" in done.stdout
    assert json.loads(cli("-p", "home", "auth", "status", environ=NO_ENV).stdout)["profile"] == "home"
    config_file(cli).unlink()
    assert cli("auth", "status", tty=True, environ=NO_ENV).exit_code == ExitCode.AUTH


def test_profiles_list_use_delete(cli: Cli) -> None:
    two_profiles(cli)
    listed = cli("auth", "profiles", "list", tty=True)
    assert listed.stdout.splitlines()[1:] == ["*  work     http://work.test  qbox_work…",
                                              "   home     http://home.test  qbox_home…"]
    assert json.loads(cli("auth", "profiles", "list").stdout)[0] == {
        "profile": "work", "baseUrl": "http://work.test", "active": True, "apiKey": "qbox_work…"}
    assert cli("auth", "profiles", "use", "home").exit_code == 0
    assert read(cli)["active_profile"] == "home"
    unknown = cli("auth", "profiles", "use", "nope")
    assert unknown.exit_code == ExitCode.USAGE and read(cli)["active_profile"] == "home"
    declined = cli("auth", "profiles", "delete", "home")  # no terminal to ask on: no
    assert declined.exit_code == ExitCode.DECLINED and "home" in read(cli)["profiles"]
    assert cli("auth", "profiles", "delete", "home", "-y").exit_code == 0
    assert read(cli) == {"active_profile": "work", "profiles": {"work": {
        "base_url": "http://work.test", "api_key": "qbox_workkey0001", "request_timeout": 7}}}
    assert cli("auth", "profiles", "delete", "home", "-y").exit_code == ExitCode.NOT_FOUND
    assert cli("-y", "auth", "profiles", "delete", "work").exit_code == 0  # the global -y
    assert read(cli) == {"active_profile": None, "profiles": {}}


def test_logout_one_profile_or_all(cli: Cli) -> None:
    two_profiles(cli)
    done = cli("auth", "logout", "-y", tty=True)
    assert done.exit_code == 0 and done.stdout == "removed work\n" and "revoke" in done.stderr
    assert read(cli)["active_profile"] == "home" and list(read(cli)["profiles"]) == ["home"]
    assert cli("-p", "work", "auth", "logout", "-y").exit_code == ExitCode.NOT_FOUND
    assert cli("auth", "logout", "--all").exit_code == ExitCode.DECLINED
    assert cli("auth", "logout", "--all", environ={"QBOX_ASSUME_YES": "1"}).exit_code == 0
    assert read(cli) == {"active_profile": None, "profiles": {}}
    assert cli("auth", "logout", "-y").exit_code == ExitCode.NOT_FOUND


def test_config_view_hides_keys_unless_asked(cli: Cli) -> None:
    two_profiles(cli)
    shown = yaml.safe_load(cli("config", "view").stdout)
    assert shown["active_profile"] == "work"
    assert shown["profiles"]["work"] == {"base_url": "http://work.test", "api_key": "qbox_work…", "request_timeout": 7}
    assert "qbox_workkey0001" not in cli("config", "view").stdout
    secrets = json.loads(cli("-o", "json", "config", "view", "--show-secrets").stdout)
    assert secrets["profiles"]["home"]["api_key"] == "qbox_homekey0002"


def test_config_get_set_unset(cli: Cli) -> None:
    two_profiles(cli)
    assert cli("config", "get", "profiles.work.base_url").stdout == "http://work.test\n"
    assert cli("config", "get", "profiles.work.api_key").stdout == "qbox_work…\n"
    assert yaml.safe_load(cli("config", "get", "profiles.home").stdout) == {
        "base_url": "http://home.test", "api_key": "qbox_home…"}
    assert cli("config", "get", "profiles.work.nothing").exit_code == ExitCode.NOT_FOUND
    assert cli("config", "get", "profiles..x").exit_code == ExitCode.USAGE
    for path, value, stored in (("profiles.work.request_timeout", "12.5", 12.5), ("profiles.work.verify_tls", "false",
                                False), ("profiles.new.base_url", "http://new.test", "http://new.test")):  # fmt: skip
        assert cli("config", "set", path, value).exit_code == 0, path
        _, name, key = path.split(".")
        assert read(cli)["profiles"][name][key] == stored
    assert cli("config", "get", "profiles.work.verify_tls").stdout == "false\n"
    assert stat.S_IMODE(config_file(cli).stat().st_mode) == 0o600
    refused = cli("config", "set", "profiles.work.api_key", "qbox_sneaky")
    assert refused.exit_code == ExitCode.USAGE and "auth login" in refused.stderr
    assert read(cli)["profiles"]["work"]["api_key"] == "qbox_workkey0001"
    assert cli("config", "set", "profiles.work.request_timeout", "soon").exit_code == ExitCode.USAGE
    assert cli("config", "set", "profiles.work", "x").exit_code == ExitCode.USAGE
    assert cli("config", "set", "active_profile", "new").exit_code == 0 and read(cli)["active_profile"] == "new"
    assert cli("config", "unset", "profiles.work.request_timeout").exit_code == 0
    assert "request_timeout" not in read(cli)["profiles"]["work"]
    assert cli("config", "unset", "profiles.work.request_timeout").exit_code == ExitCode.NOT_FOUND
    assert cli("config", "unset", "profiles.home").exit_code == 0 and "home" not in read(cli)["profiles"]
    assert cli("config", "unset", "profiles.home").exit_code == ExitCode.NOT_FOUND
    assert cli("config", "path").stdout == f"{config_file(cli)}\n"


def test_save_replaces_a_stale_temp_file_and_never_follows_a_link(cli: Cli, tmp_path: Path) -> None:
    two_profiles(cli)
    target = tmp_path / "elsewhere"
    target.write_text("untouched")
    config_file(cli).with_name("config.yaml.tmp").symlink_to(target)
    assert cli("auth", "profiles", "use", "home").exit_code == 0
    assert target.read_text() == "untouched"
    assert read(cli)["active_profile"] == "home"
    assert not os.path.lexists(config_file(cli).with_name("config.yaml.tmp"))


@pytest.mark.parametrize("written_by", ["published", "ours"])
def test_the_file_format_is_the_published_one(cli: Cli, written_by: str) -> None:
    # What the published CLI's ConfigFile.save writes (yaml.safe_dump, sort_keys=False).
    published = ("active_profile: prod\nprofiles:\n  prod:\n    base_url: http://qbox.test\n"
                 "    api_key: qbox_prodkey0001\n")
    if written_by == "published":
        write(cli, yaml.safe_load(published))
    else:
        cli.server.on("GET", "/v1/auth/me", reply(200, ME))
        assert cli("auth", "login", "-p", "prod", "--base-url", "http://qbox.test", "--api-key", "qbox_prodkey0001",
                   environ=NO_ENV).exit_code == 0
        assert config_file(cli).read_text() == published
    cli.server.on("GET", "/v1/auth/me", reply(200, ME))
    assert json.loads(cli("auth", "status", environ=NO_ENV).stdout)["profile"] == "prod"


def test_no_key_anywhere_points_at_auth_login(cli: Cli) -> None:
    done = cli("sandboxes", "list", tty=True, environ=NO_ENV)
    assert done.exit_code == ExitCode.AUTH
    assert done.stderr.splitlines()[1].startswith("hint: `qbox auth login` saves a key")
    assert cli.server.seen == []


def test_a_global_profile_names_where_login_saves(cli: Cli) -> None:
    done = cli("-p", "fresh", "auth", "login", "--api-key", KEY, "--no-verify", environ=NO_ENV)
    assert done.exit_code == 0, done.output
    assert read(cli)["active_profile"] == "fresh" and read(cli)["profiles"]["fresh"]["api_key"] == KEY
