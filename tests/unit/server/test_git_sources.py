"""Templates from git: the URL, address, ref, path and build-arg rules, the build key and the
cache's choice (pure; the service against real repositories is test_git_templates.py)."""
from __future__ import annotations

from datetime import datetime, timedelta, UTC

import pytest

from qbox.core.errors import (
    BuildArgsInvalidError,
    DockerfilePathInvalidError,
    GitUrlInvalidError,
    RefNotFoundError,
    RepoNotFoundError,
    ValidationError,
)
from qbox.core.ids import template_id_for
from qbox.server.db.tables import Template
from qbox.server.services.git_remote import Access, git_config, git_environment
from qbox.server.services.git_sources import (
    BuildPaths,
    build_key,
    build_paths,
    cache_source,
    check_addresses,
    check_build_args,
    check_ref,
    match_ref,
    parse_git_url,
    parse_ls_remote,
    public_address,
    redacted_url,
)

# --- URLs ---------------------------------------------------------------------------------


def test_https_urls_are_taken_apart() -> None:
    url = parse_git_url("https://Example.COM/org/repo.git", allow_insecure=False)
    assert (url.url, url.scheme, url.host, url.port) == ("https://example.com/org/repo.git", "https",
                                                         "example.com", 443)
    assert parse_git_url("https://example.com:8443/r", allow_insecure=False).port == 8443


@pytest.mark.parametrize("url", [
    "http://example.com/r.git", "file:///srv/r.git", "ssh://example.com/r.git", "git://example.com/r",
    "git@example.com:org/r.git", "/srv/r.git", "example.com/r", "ftp://example.com/r", "",
])
def test_only_https_without_the_setting(url: str) -> None:
    with pytest.raises(GitUrlInvalidError):
        parse_git_url(url, allow_insecure=False)


def test_http_and_file_with_the_setting() -> None:
    assert parse_git_url("http://127.0.0.1:9000/r.git", allow_insecure=True).port == 9000
    assert parse_git_url("file:///srv/r.git", allow_insecure=True).url == "file:///srv/r.git"
    for url in ("ssh://example.com/r.git", "file://elsewhere/srv/r.git", "file:relative"):
        with pytest.raises(GitUrlInvalidError):
            parse_git_url(url, allow_insecure=True)


@pytest.mark.parametrize("url", [
    "https://user:token@example.com/r.git", "https://token@example.com/r.git",
    "https://:pw@example.com/r.git", "https://example.com/r.git?token=x", "https://example.com/r.git#x",
    "https://example.com/", "https://example.com", "https://exa mple.com/r", "https://example.com/r\n",
    "https://-bad-.example/r", "https://example.com:99999/r", "https://" + "a" * 2100 + ".com/r",
])
def test_malformed_urls_and_credentials_are_refused(url: str) -> None:
    with pytest.raises(GitUrlInvalidError) as caught:
        parse_git_url(url, allow_insecure=True)
    # Nothing the caller put in a URL's user part is repeated back.
    assert "token" not in caught.value.message and "pw" not in caught.value.message


def test_a_redacted_url_has_no_credentials_or_query() -> None:
    assert redacted_url("https://user:secret@example.com/r.git?t=secret#x") == "https://example.com/r.git"
    assert "secret" not in redacted_url("http://secret@[::1/x")


@pytest.mark.parametrize(("address", "public"), [
    ("93.184.216.34", True), ("2606:2800:220:1:248:1893:25c8:1946", True),
    ("127.0.0.1", False), ("10.1.2.3", False), ("172.16.0.1", False), ("192.168.1.1", False),
    ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False), ("224.0.0.1", False),
    ("255.255.255.255", False), ("::1", False), ("fe80::1%eth0", False), ("fc00::1", False),
    ("::ffff:127.0.0.1", False), ("::ffff:10.0.0.1", False), ("::", False), ("not-an-ip", False),
])
def test_public_addresses(address: str, public: bool) -> None:
    assert public_address(address) is public


def test_every_address_of_the_host_must_be_public() -> None:
    url = parse_git_url("https://example.com/r.git", allow_insecure=False)
    check_addresses(url, ["93.184.216.34"], allow_insecure=False)
    with pytest.raises(GitUrlInvalidError) as caught:
        check_addresses(url, ["93.184.216.34", "10.0.0.7"], allow_insecure=False)
    assert "10.0.0.7" not in caught.value.message
    check_addresses(url, ["93.184.216.34", "10.0.0.7"], allow_insecure=True)
    with pytest.raises(RepoNotFoundError):
        check_addresses(url, [], allow_insecure=False)


def test_git_runs_with_nothing_of_ours() -> None:
    access = Access(("https",), "example.com:443:93.184.216.34")
    env = git_environment("/tmp/home", access)
    assert env["GIT_ALLOW_PROTOCOL"] == "https" and env["GIT_TERMINAL_PROMPT"] == "0"
    assert env["GIT_CONFIG_NOSYSTEM"] == "1" and env["GIT_CONFIG_GLOBAL"] == "/dev/null"
    assert env["HOME"] == "/tmp/home" and "http_proxy" not in env and "https_proxy" not in env
    config = git_config(access)
    for item in ("credential.helper=", "http.followRedirects=false", "protocol.allow=never",
                 "protocol.https.allow=always", "http.curloptResolve=example.com:443:93.184.216.34",
                 "core.hooksPath=/dev/null", "fetch.recurseSubmodules=false"):
        assert item in config


# --- refs ------------------------------------------------------------------------------------

MAIN = "a" * 40
TAG_OBJECT = "b" * 40
TAGGED = "c" * 40
FEATURE = "c" * 8 + "d" * 32
LISTING = (f"{MAIN}\tHEAD\n{MAIN}\trefs/heads/main\n{FEATURE}\trefs/heads/feature\n"
           f"{TAG_OBJECT}\trefs/tags/v1\n{TAGGED}\trefs/tags/v1^{{}}\n{FEATURE}\trefs/tags/feature\n"
           "garbage line\n").encode()


def test_ls_remote_output_peels_annotated_tags() -> None:
    refs = parse_ls_remote(LISTING)
    assert refs == {"HEAD": MAIN, "refs/heads/main": MAIN, "refs/heads/feature": FEATURE,
                    "refs/tags/v1": TAGGED, "refs/tags/feature": FEATURE}


@pytest.mark.parametrize(("ref", "sha", "refname"), [
    ("main", MAIN, "refs/heads/main"), ("v1", TAGGED, "refs/tags/v1"),
    ("feature", FEATURE, "refs/heads/feature"), ("refs/tags/feature", FEATURE, "refs/tags/feature"),
    ("HEAD", MAIN, "HEAD"), ("E" * 40, "e" * 40, None), ("f" * 64, "f" * 64, None),
    ("aaaaaaa", MAIN, None),
])
def test_refs_resolve_as_git_clone_branch_would(ref: str, sha: str, refname: str | None) -> None:
    match = match_ref(ref, parse_ls_remote(LISTING))
    assert (match.sha, match.refname, match.prefix) == (sha, refname, None)


def test_a_short_commit_no_ref_points_at_is_looked_for_in_the_history() -> None:
    assert match_ref("1234abc", parse_ls_remote(LISTING)).prefix == "1234abc"
    # Ambiguous among the tips: searched too (then refused if still ambiguous).
    assert match_ref("cccc", {"a": TAGGED, "b": FEATURE}).prefix == "cccc"


@pytest.mark.parametrize("ref", ["nope", "refs/heads/nope", "abc", "main2"])
def test_unknown_refs_are_404(ref: str) -> None:
    with pytest.raises(RefNotFoundError):
        match_ref(ref, parse_ls_remote(LISTING))


@pytest.mark.parametrize("ref", ["", "-upload-pack=evil", "a..b", "a b", "x\n", "x:y", "a~1", "HEAD^",
                                 "x@{0}", "/abs", "trail/", "x.lock", "a" * 300, "a*", "a\\b"])
def test_malformed_refs_are_400(ref: str) -> None:
    with pytest.raises(ValidationError) as caught:
        check_ref(ref)
    assert caught.value.code == "validation_error"


# --- paths, build args, the key ----------------------------------------------------------------


@pytest.mark.parametrize(("dockerfile", "context", "expected"), [
    ("", ".", BuildPaths("Dockerfile", "")),
    ("", "", BuildPaths("Dockerfile", "")),
    ("", "./app/", BuildPaths("app/Dockerfile", "app")),
    ("docker/Dockerfile.prod", "app", BuildPaths("docker/Dockerfile.prod", "app")),
    ("./a//b/./Dockerfile", ".", BuildPaths("a/b/Dockerfile", "")),
])
def test_paths_are_normalised(dockerfile: str, context: str, expected: BuildPaths) -> None:
    assert build_paths(dockerfile, context) == expected


@pytest.mark.parametrize(("dockerfile", "context", "field"), [
    ("/etc/passwd", ".", "dockerfilePath"), ("../Dockerfile", ".", "dockerfilePath"),
    ("a/../../Dockerfile", ".", "dockerfilePath"), ("Docker\x00file", ".", "dockerfilePath"),
    ("Dockerfile\nHEAD:x", ".", "dockerfilePath"), ("", "/srv", "contextPath"),
    ("", "..", "contextPath"), ("", "a" * 1100, "contextPath"),
])
def test_paths_leaving_the_repository_are_refused(dockerfile: str, context: str, field: str) -> None:
    with pytest.raises(DockerfilePathInvalidError) as caught:
        build_paths(dockerfile, context)
    assert caught.value.details["field"] == field


def test_build_args() -> None:
    assert check_build_args({"A": "1", "_b2": "x=y", "EMPTY": ""}) == {"A": "1", "_b2": "x=y", "EMPTY": ""}
    for bad in ({"1A": "x"}, {"A-B": "x"}, {"": "x"}, {"A": "a\x00b"}, {"A" * 200: "x"},
                {f"K{i}": "v" for i in range(65)}, {"A": "x" * 70_000}):
        with pytest.raises(BuildArgsInvalidError):
            check_build_args(bad)


def test_the_build_key_covers_every_build_input() -> None:
    url = parse_git_url("https://example.com/r.git", allow_insecure=False)
    paths = build_paths("", ".")
    key = build_key(url, MAIN, paths, {"A": "1", "B": "2"})
    assert key.startswith("sha256:") and len(key) == 71
    assert key == build_key(url, MAIN, build_paths("Dockerfile", "./"), {"B": "2", "A": "1"})
    others = {
        build_key(parse_git_url("https://example.com/other.git", allow_insecure=False), MAIN, paths,
                  {"A": "1", "B": "2"}),
        build_key(url, TAGGED, paths, {"A": "1", "B": "2"}),
        build_key(url, MAIN, build_paths("Dockerfile.dev", "."), {"A": "1", "B": "2"}),
        build_key(url, MAIN, build_paths("", "app"), {"A": "1", "B": "2"}),
        build_key(url, MAIN, paths, {"A": "1", "B": "3"}),
        build_key(url, MAIN, paths, {"A": "1"}),
    }
    assert key not in others and len(others) == 6


def _row(name: str, *, status: str = "ready", copy_of: str | None = None, age: int = 0) -> Template:
    return Template(id=template_id_for(name), name=name, status=status, built_from_template_id=copy_of,
                    created_at=datetime(2026, 1, 1, tzinfo=UTC) - timedelta(minutes=age))


def test_the_cache_reuses_a_ready_original_build_newest_first() -> None:
    assert cache_source([]) is None
    assert cache_source([_row("a", status="building"), _row("b", status="failed")]) is None
    copy, old, new = _row("copy", copy_of="tpl_old"), _row("old", age=10), _row("new", age=1)
    assert cache_source([copy, old, new]) is new
    assert cache_source([copy]) is copy
