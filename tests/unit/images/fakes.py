"""A scripted ``CommandRunner`` and stand-ins for skopeo, umoci and mmdebstrap.

The fakes write just enough of what the real tools write (an OCI layout's
index and blobs, an unpacked bundle, a bootstrapped tree) for the image code
to run its real logic on top, without root and without the tools.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import sys
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from qbox.agent.images.runner import CommandResult, OutputCallback


@dataclass
class Reply:
    returncode: int = 0
    lines: tuple[str, ...] = ()


Handler = Callable[[list[str]], Reply | None]


@dataclass
class FakeRunner:
    handlers: dict[str, Handler] = field(default_factory=dict)
    calls: list[list[str]] = field(default_factory=list)
    # Seconds each command "runs", so tests can overlap two callers.
    delay: float = 0.0

    async def run(
        self,
        argv: Sequence[str],
        *,
        on_output: OutputCallback | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CommandResult:
        args = list(argv)
        self.calls.append(args)
        if self.delay:
            await asyncio.sleep(self.delay)
        handler = self.handlers.get(args[0])
        reply = (handler(args) if handler else None) or Reply()
        for line in reply.lines:
            if on_output is not None:
                on_output(line)
        return CommandResult(reply.returncode, "\n".join(reply.lines))

    def tools(self) -> list[str]:
        """Each call as 'tool subcommand' (or 'chroot <command>'), for order checks."""
        out = []
        for call in self.calls:
            if call[0] == "chroot":
                # Skip chroot's own options and the rootfs.
                out.append(f"chroot {[a for a in call[1:] if not a.startswith('--')][1]}")
            elif call[1:3] == ["-m", "pip"]:
                out.append(f"pip {call[3]}")
            elif call[0] in ("umoci", "skopeo"):
                out.append(f"{call[0]} {call[1]}")
            else:
                out.append(call[0])
        return out


def _write_blob(layout: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (blobs / digest).write_bytes(data)
    return f"sha256:{digest}"


def _split_image(image: str) -> tuple[Path, str]:
    path, _, tag = image.partition(":")
    return Path(path), tag or "latest"


def digest_for(layout: Path, name: str) -> str:
    index = json.loads((layout / "index.json").read_text())
    for entry in index["manifests"]:
        if entry["annotations"]["org.opencontainers.image.ref.name"] == name:
            return str(entry["digest"])
    raise KeyError(name)


def fake_skopeo(env: Sequence[str] = ("PATH=/usr/bin",)) -> Handler:
    """``skopeo copy SRC oci:LAYOUT:NAME``: stores an image derived from SRC's text."""

    def handle(argv: list[str]) -> Reply | None:
        assert argv[1] == "copy", argv
        source, dest = argv[-2], argv[-1]
        assert dest.startswith("oci:"), dest
        layout, name = _split_image(dest.removeprefix("oci:"))
        layer = source.encode()
        config = json.dumps({"config": {"Env": list(env), "WorkingDir": "/home/user"}}).encode()
        layer_digest = _write_blob(layout, layer)
        config_digest = _write_blob(layout, config)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "config": {"digest": config_digest, "size": len(config)},
                "layers": [{"digest": layer_digest, "size": len(layer)}],
            }
        ).encode()
        manifest_digest = _write_blob(layout, manifest)
        index_path = layout / "index.json"
        index = json.loads(index_path.read_text()) if index_path.exists() else {"manifests": []}
        entries = [e for e in index["manifests"] if e["annotations"]["org.opencontainers.image.ref.name"] != name]
        entries.append(
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": name},
            }
        )
        index_path.write_text(json.dumps({"schemaVersion": 2, "manifests": entries}))
        return Reply(0, (f"Copying blob {layer_digest}", "Writing manifest to image destination"))

    return handle


def fake_umoci() -> Handler:
    """``umoci unpack`` makes a bundle; ``umoci init`` makes an empty layout; rest no-ops."""

    def handle(argv: list[str]) -> Reply | None:
        if argv[1] == "unpack":
            layout, name = _split_image(argv[argv.index("--image") + 1])
            bundle = Path(argv[-1])
            (bundle / "rootfs" / "etc").mkdir(parents=True)
            (bundle / "rootfs" / "etc" / "passwd").write_text("user:x:1000:1000::/home/user:/bin/bash\n")
            walk = [{"digest": digest_for(layout, name)}]
            (bundle / "umoci.json").write_text(json.dumps({"from_descriptor_path": {"descriptor_walk": walk}}))
        elif argv[1] == "init":
            layout = Path(argv[argv.index("--layout") + 1])
            layout.mkdir(parents=True)
            (layout / "index.json").write_text('{"schemaVersion": 2, "manifests": []}')
        return None

    return handle


def fake_mmdebstrap() -> Handler:
    """Lays out the few files the post-bootstrap steps touch, as a build host would leave them."""

    def handle(argv: list[str]) -> Reply | None:
        target = Path(next(a for a in argv[1:] if not a.startswith("-") and "/" in a))
        for rel in ("etc/apt", "home", "tmp", "dev", "var/lib/apt/lists/partial", "var/cache/apt/archives"):
            (target / rel).mkdir(parents=True, exist_ok=True)
        (target / "etc" / "hostname").write_text("buildhost\n")
        (target / "etc" / "resolv.conf").write_text("nameserver 10.1.2.3\n")
        (target / "var/lib/apt/lists/lock").write_text("")
        (target / "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease").write_text("x")
        (target / "var/cache/apt/pkgcache.bin").write_text("x")
        (target / "var/cache/apt/archives/python3_3.11.deb").write_text("x")
        (target / "tmp" / "leftover").write_text("x")
        (target / "usr/bin").mkdir(parents=True, exist_ok=True)
        (target / "usr/bin/python3").symlink_to("python3.11")
        return Reply(0, ("I: running apt-get update...", "I: success in 1.0 seconds"))

    return handle


def make_wheel(name: str, version: str, extra: dict[str, bytes] | None = None) -> bytes:
    """A minimal pure-Python wheel: a package with an ``__init__``, and its dist-info."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"{name}/", b"")
        archive.writestr(f"{name}/__init__.py", f"__version__ = {version!r}\n".encode())
        archive.writestr(f"{name}-{version}.dist-info/METADATA", f"Name: {name}\nVersion: {version}\n".encode())
        for member, data in (extra or {}).items():
            archive.writestr(member, data)
    return buffer.getvalue()


def fake_pip(wheels: Mapping[str, bytes] | None = None) -> Handler:
    """``python -m pip download -d DIR -r FILE``: writes the wheel named by each pinned line.

    Serves ``wheels[requirement]`` when given, else a minimal wheel; the
    requirement must carry a ``--hash`` (real pip checks it).
    """

    def handle(argv: list[str]) -> Reply | None:
        assert argv[1:4] == ["-m", "pip", "download"], argv
        assert "--require-hashes" in argv and "--no-deps" in argv
        dest = Path(argv[argv.index("-d") + 1])
        for line in Path(argv[argv.index("-r") + 1]).read_text().splitlines():
            requirement, _, pin = line.partition(" --hash=sha256:")
            assert len(pin) == 64, line
            name, _, version = requirement.partition("==")
            data = (wheels or {}).get(requirement) or make_wheel(name, version)
            (dest / f"{name}-{version}-py3-none-any.whl").write_bytes(data)
        return Reply(0, ("Saved wheel",))

    return handle


def image_runner() -> FakeRunner:
    """A runner that answers skopeo and umoci (enough for ``ImageStore``)."""
    return FakeRunner(handlers={"skopeo": fake_skopeo(), "umoci": fake_umoci()})


def build_runner() -> FakeRunner:
    """A runner that also bootstraps (enough for ``ensure_base_image``)."""
    runner = image_runner()
    runner.handlers["mmdebstrap"] = fake_mmdebstrap()
    runner.handlers[sys.executable] = fake_pip()
    return runner
