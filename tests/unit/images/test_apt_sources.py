from __future__ import annotations

from pathlib import Path

from qbox.agent.images.apt_sources import AptSource, host_sources, parse_deb822, parse_one_line

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.corp.example/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.corp.example/debian-security/
Suites: bookworm-security
Components: main
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBF...
 -----END PGP PUBLIC KEY BLOCK-----

Types: deb-src
URIs: http://mirror.corp.example/debian
Suites: bookworm
Components: main

Enabled: no
Types: deb
URIs: http://disabled.example/debian
Suites: bookworm
Components: main
"""


def _apt_dir(tmp_path: Path, sources_list: str = "", files: dict[str, str] | None = None) -> Path:
    parts = tmp_path / "sources.list.d"
    parts.mkdir(parents=True)
    (tmp_path / "sources.list").write_text(sources_list)
    for name, text in (files or {}).items():
        (parts / name).write_text(text)
    return tmp_path


def test_host_deb822_sources_give_main_updates_and_security_in_order(tmp_path: Path) -> None:
    apt_dir = _apt_dir(tmp_path, files={"debian.sources": DEB822})

    sources = host_sources("bookworm", ("main",), apt_dir)

    assert [s.one_line() for s in sources] == [
        "deb http://mirror.corp.example/debian bookworm main",
        "deb http://mirror.corp.example/debian bookworm-updates main",
        "deb http://mirror.corp.example/debian-security bookworm-security main",
    ]


def test_one_line_sources_with_options(tmp_path: Path) -> None:
    sources_list = (
        "# comment\n"
        "deb [arch=amd64 trusted=yes] http://mirror.corp.example/debian bookworm-security main\n"
        "deb [signed-by=/k.gpg] https://mirror.corp.example/debian bookworm main non-free\n"
        "deb-src http://mirror.corp.example/debian bookworm main\n"
        "deb http://mirror.corp.example/debian bullseye main\n"
        "deb cdrom:[Debian 12]/ bookworm main\n"
    )
    apt_dir = _apt_dir(tmp_path, sources_list)

    sources = host_sources("bookworm", ("main",), apt_dir)

    assert sources == [
        AptSource("https://mirror.corp.example/debian", "bookworm", ("main",)),
        AptSource("http://mirror.corp.example/debian", "bookworm-security", ("main",), trusted=True),
    ]
    assert sources[1].one_line().startswith("deb [trusted=yes] http://")


def test_other_distributions_and_ignored_file_suffixes_give_nothing(tmp_path: Path) -> None:
    apt_dir = _apt_dir(
        tmp_path,
        "deb http://archive.ubuntu.com/ubuntu jammy main\n",
        {
            "nodesource.sources.disabled-by-farm": DEB822,
            "google.list": "deb https://packages.cloud.google.com/apt cloud-sdk main\n",
        },
    )

    assert host_sources("bookworm", ("main",), apt_dir) == []


def test_missing_apt_dir_gives_nothing(tmp_path: Path) -> None:
    assert host_sources("bookworm", ("main",), tmp_path / "nope") == []


def test_duplicates_are_dropped(tmp_path: Path) -> None:
    line = "deb http://deb.debian.org/debian bookworm main\n"
    apt_dir = _apt_dir(tmp_path, line + line, {"extra.list": line})

    assert len(host_sources("bookworm", ("main",), apt_dir)) == 1


def test_parsers_ignore_malformed_lines() -> None:
    assert parse_one_line("deb\ndeb [arch=amd64]\ndeb http://x\n") == []
    assert parse_deb822("garbage without colon\n\n") == []
