"""Small OCI images for tests, written with ``tarfile`` and hand-made layout JSON.

No network, no daemon, no root for building them; each takes well under a
second and is byte-for-byte deterministic, so two layouts built from the same
call share every blob digest (which is what layer-sharing tests look at).

- ``busybox_layout``: a real, runnable image (busybox-static plus the applets
  tests use, /etc/passwd with root and user 1000, /tmp 1777) in two layers.
- ``oci_archive``: the same as an ``oci-archive:`` tarball (via skopeo).
- ``hostile_layout``: a layer trying every path and node trick a malicious
  image can try against the unpacker.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import platform
import subprocess
import tarfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

BUSYBOX = Path("/usr/bin/busybox")
APPLETS = (
    "sh", "ash", "echo", "cat", "ls", "sleep", "id", "env", "test", "[", "true", "false", "touch",
    "mkdir", "printf", "rm", "cp", "mv", "ln", "chmod", "chown", "grep", "sed", "head", "tail", "wc",
    "pwd", "whoami", "hostname", "ps", "kill", "stat", "readlink", "find", "tr", "uname", "date",
    "dirname", "basename", "sort", "uniq", "xargs", "yes", "seq", "du", "df", "mount",
)
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_MTIME = 1_700_000_000
_LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
_MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
_INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
_CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())

Entry = Callable[[tarfile.TarFile], None]


def _info(name: str, kind: bytes, *, mode: int, uid: int = 0, gid: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid, info.gid = uid, gid
    info.uname = info.gname = ""
    info.mtime = _MTIME
    return info


def directory(name: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Entry:
    return lambda tar: tar.addfile(_info(name, tarfile.DIRTYPE, mode=mode, uid=uid, gid=gid))


def regular(name: str, data: bytes = b"", mode: int = 0o644, uid: int = 0, gid: int = 0) -> Entry:
    def add(tar: tarfile.TarFile) -> None:
        info = _info(name, tarfile.REGTYPE, mode=mode, uid=uid, gid=gid)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    return add


def symlink(name: str, target: str) -> Entry:
    def add(tar: tarfile.TarFile) -> None:
        info = _info(name, tarfile.SYMTYPE, mode=0o777)
        info.linkname = target
        tar.addfile(info)

    return add


def hardlink(name: str, target: str) -> Entry:
    def add(tar: tarfile.TarFile) -> None:
        info = _info(name, tarfile.LNKTYPE, mode=0o644)
        info.linkname = target
        tar.addfile(info)

    return add


def node(name: str, kind: bytes, major: int = 0, minor: int = 0, mode: int = 0o666) -> Entry:
    def add(tar: tarfile.TarFile) -> None:
        info = _info(name, kind, mode=mode)
        info.devmajor, info.devminor = major, minor
        tar.addfile(info)

    return add


def layer_tar(entries: Sequence[Entry]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for add in entries:
            add(tar)
    return buffer.getvalue()


def _blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def write_layout(dest_dir: Path, tag: str, layers: Sequence[bytes], *, env: Sequence[str] = (PATH_ENV,),
                 working_dir: str = "/", user: str = "", arch: str = _ARCH) -> str:
    """Write an OCI layout with one image of ``layers`` (tar bytes) tagged ``tag``; return its ref."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    (dest_dir / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    # gzip as registries serve them: skopeo then copies the blobs as they are
    # (an uncompressed source would be recompressed on every copy, never reused).
    layer_descs = [{"mediaType": _LAYER_MEDIA_TYPE, **_blob(dest_dir, gzip.compress(data, 1, mtime=0))}
                   for data in layers]
    diff_ids = [f"sha256:{hashlib.sha256(data).hexdigest()}" for data in layers]
    config = {
        "created": "2023-11-14T22:13:20Z",
        "architecture": arch,
        "os": "linux",
        "config": {"Env": list(env), "WorkingDir": working_dir, "User": user, "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "tests/oci_images.py"} for _ in layers],
    }
    config_desc = {"mediaType": _CONFIG_MEDIA_TYPE,
                   **_blob(dest_dir, json.dumps(config, sort_keys=True).encode())}
    manifest = {"schemaVersion": 2, "mediaType": _MANIFEST_MEDIA_TYPE, "config": config_desc,
                "layers": layer_descs}
    manifest_desc = {"mediaType": _MANIFEST_MEDIA_TYPE,
                     **_blob(dest_dir, json.dumps(manifest, sort_keys=True).encode()),
                     "annotations": {"org.opencontainers.image.ref.name": tag}}
    index_path = dest_dir / "index.json"
    entries = json.loads(index_path.read_text())["manifests"] if index_path.exists() else []
    entries = [e for e in entries if e.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag]
    index_path.write_text(json.dumps({"schemaVersion": 2, "manifests": [*entries, manifest_desc]}))
    return f"oci:{dest_dir}:{tag}"


def busybox_layers() -> tuple[bytes, bytes]:
    """(binaries, /etc and home): two layers so sharing the first one is observable."""
    binaries: list[Entry] = [directory("bin"), directory("usr"), directory("usr/bin"), directory("sbin"),
                             regular("bin/busybox", BUSYBOX.read_bytes(), mode=0o755)]
    binaries += [symlink(f"bin/{name}", "busybox") for name in APPLETS]
    passwd = (b"root:x:0:0:root:/root:/bin/sh\n"
              b"user:x:1000:1000:user:/home/user:/bin/sh\n"
              b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    group = b"root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n"
    system = [directory("etc"), regular("etc/passwd", passwd), regular("etc/group", group),
              regular("etc/hostname", b"busybox\n"), directory("root", 0o700), directory("home"),
              directory("home/user", 0o755, 1000, 1000), directory("tmp", 0o1777), directory("proc"),
              directory("sys"), directory("dev"), directory("var"), directory("var/tmp", 0o1777)]
    return layer_tar(binaries), layer_tar(system)


def busybox_layout(dest_dir: Path, tag: str = "busybox") -> str:
    """A small runnable image in an OCI layout at ``dest_dir``; returns ``oci:<dir>:<tag>``."""
    return write_layout(dest_dir, tag, busybox_layers(), working_dir="/home/user")


def multiarch_layout(dest_dir: Path, tag: str = "multi") -> str:
    """Busybox for this host's architecture and a decoy for another, behind one image index."""
    other = "arm64" if _ARCH != "arm64" else "amd64"
    manifests = []
    for arch, layers in ((other, [layer_tar([regular("decoy", b"wrong platform\n")])]), (_ARCH, busybox_layers())):
        write_layout(dest_dir, f"{tag}-{arch}", layers, working_dir="/home/user", arch=arch)
        index = json.loads((dest_dir / "index.json").read_text())
        entry = next(e for e in index["manifests"]
                     if e["annotations"]["org.opencontainers.image.ref.name"] == f"{tag}-{arch}")
        manifests.append({"mediaType": _MANIFEST_MEDIA_TYPE, "digest": entry["digest"], "size": entry["size"],
                          "platform": {"architecture": arch, "os": "linux"}})
    image_index = {"schemaVersion": 2, "mediaType": _INDEX_MEDIA_TYPE, "manifests": manifests}
    desc = {"mediaType": _INDEX_MEDIA_TYPE, **_blob(dest_dir, json.dumps(image_index, sort_keys=True).encode()),
            "annotations": {"org.opencontainers.image.ref.name": tag}}
    index = json.loads((dest_dir / "index.json").read_text())
    index["manifests"].append(desc)
    (dest_dir / "index.json").write_text(json.dumps(index))
    return f"oci:{dest_dir}:{tag}"


def oci_archive(layout_ref: str, dest_tar: Path) -> str:
    """Copy ``layout_ref`` into an ``oci-archive:`` tarball; returns that ref."""
    ref = f"oci-archive:{dest_tar}"
    subprocess.run(["skopeo", "copy", "--quiet", layout_ref, ref], check=True, capture_output=True)
    return ref


HOSTILE_SETUID = "usr/bin/rootshell"


def hostile_tricks(marker: str, canary_dir: Path) -> dict[str, list[Entry]]:
    """Every trick of a malicious layer, by name; ``marker`` makes the host paths it aims at unique."""
    return {
        "dotdot": [regular(f"../../escape-{marker}", b"escaped\n")],
        "absolute": [regular(f"/abs-escape-{marker}", b"escaped\n")],
        "symlink-root": [symlink("lnk", "/"), regular(f"lnk/tmp/pwned-{marker}", b"pwned\n")],
        "symlink-etc": [symlink("etcl", "/etc"), regular("etcl/qbox-pwned", b"pwned\n")],
        "hardlink-abs": [hardlink("passwd-link", "/etc/passwd")],
        "hardlink-dotdot": [hardlink("shadow-link", "../../../etc/shadow")],
        "devices": [node("dev-null", tarfile.CHRTYPE, 1, 3), node("dev-loop", tarfile.BLKTYPE, 7, 0, mode=0o660),
                    directory("sub"), node("sub/kmem", tarfile.CHRTYPE, 1, 2, mode=0o666)],
        "fifo": [node("fifo", tarfile.FIFOTYPE, mode=0o644)],
        "setuid": [directory("usr"), directory("usr/bin"),
                   regular(HOSTILE_SETUID, b"#!/bin/sh\nid\n", mode=0o4755)],
        "whiteouts": [regular(".wh..wh..opq"), regular(".wh.."), regular(".wh.etc"),
                      directory("a"), regular("a/.wh.../x")],
        "canary": [symlink("canary", str(canary_dir)), regular("canary/planted", b"planted\n"),
                   regular("canary/canary.txt", b"overwritten\n")],
    }


def hostile_layout(dest_dir: Path, canary_dir: Path, tricks: Sequence[str] | None = None,
                   tag: str = "hostile") -> str:
    """A layout whose image tries to escape the unpack dir (all tricks, or ``tricks``); returns its ref.

    The random part of the host paths it aims at is ``hostile_marker(dest_dir)``.
    """
    marker = uuid.uuid4().hex[:12]
    dest_dir.mkdir(parents=True, exist_ok=True)
    (dest_dir / "marker").write_text(marker)
    by_name = hostile_tricks(marker, canary_dir)
    entries = [entry for name in (tricks or list(by_name)) for entry in by_name[name]]
    return write_layout(dest_dir, tag, [layer_tar([*entries, directory("etc"), regular("etc/ok", b"fine\n")])])


def hostile_marker(dest_dir: Path) -> str:
    return (dest_dir / "marker").read_text()
