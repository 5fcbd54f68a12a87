"""The agent's content-addressed image store: one OCI layout plus unpacked rootfs trees.

Layout under ``root``::

    oci/                    one OCI image layout; every template is a tag in it,
                            so blobs are shared between images and stored once
    rootfs/<digest-hex>/    the bundle ``umoci unpack`` made for that manifest;
                            the sandbox's lower dir is its ``rootfs/`` subdir
    layers/<diff-hex>/      a built image's own layer, in overlayfs format
    images/<digest-hex>.json  a built image: {"base", "layers" (top first), "kernels"}
    tmp/                    unpacks, commits and build work dirs in flight
    .lock                   flock held by whoever writes to any of the above

Every directory here is 0700: image content may hold setuid-root files, and
no user of the host may reach them (the sandboxes see them through their
overlay mounts only). Unpacked content is sanitised: device nodes are removed.

An unpacked rootfs is shared by every sandbox of its image and is only ever
mounted as a read-only overlayfs lower dir: nothing in qbox writes into it
after the atomic rename that publishes it. Sandbox changes go to the
sandbox's own upper dir. (The ``config.json`` umoci writes next to it is not
used; the sandbox layer writes its own.)
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qbox.agent.images.layout import OciLayout, read_json, write_json
from qbox.agent.images.layers import remove_device_nodes, tree_size, write_layer_tar
from qbox.agent.images.lock import file_lock
from qbox.agent.images.refs import (
    RegistryCredentials,
    authfile,
    digest_hex,
    is_digest,
    is_insecure_registry,
    local_path,
    normalize_ref,
    registry_host,
    validate_name,
)
from qbox.agent.images.runner import CommandResult, CommandRunner, SubprocessRunner
from qbox.core.errors import InternalError, NotFoundError, QboxError, ValidationError

ProgressCallback = Callable[[str], None]

_SUBDIRS = ("oci", "rootfs", "layers", "images", "tmp")
# Prefixes of what a store operation leaves in tmp/ while holding the lock:
# whatever carries them when the lock is free is left over from a crash.
_LOCKED_TMP_PREFIXES = ("unpack-", "commit-", "auth-", "push-")
# Build work dirs are used without the lock (a build runs for minutes);
# gc removes those nobody touched for this long.
_STALE_WORK_DIR_SECONDS = 24 * 3600

# skopeo exits 1 for every failure; these prefixes of its message are the
# ones that mean "this source cannot be read" (unknown transport, missing
# path, unknown tag, registry refusal) rather than a fault of this host.
_SOURCE_FAILURE_MARKERS = ("initializing source", "Invalid source name", "unauthorized")
_LOGRUS_MSG_RE = re.compile(r'level=\w+ msg="((?:[^"\\]|\\.)*)"')
_COPYING_BLOB_RE = re.compile(r"Copying blob (?:sha256:)?([0-9a-f]{12,64})")


@dataclass(frozen=True)
class ImageInfo:
    digest: str  # the manifest digest, "sha256:<hex>"
    # Bytes of the image's stored blobs (config + layers, as compressed in
    # the store), i.e. what pulling it costs, not its unpacked size.
    size_bytes: int


@dataclass(frozen=True)
class ImageConfig:
    """The parts of the image's config a sandbox needs to run like the image intends."""

    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)


class ImageStore:
    def __init__(
        self,
        root: Path,
        *,
        runner: CommandRunner | None = None,
        insecure_registries: Sequence[str] = (),
    ) -> None:
        # skopeo and umoci split "path:tag" at a colon, so the path must not hold one.
        if ":" in str(root):
            raise ValueError(f"image store path {root} must not contain ':'")
        self.root = Path(root)
        self._layout = OciLayout(self.root / "oci")
        self._runner: CommandRunner = runner or SubprocessRunner()
        # Registries reached without TLS verification besides loopback ones.
        self._insecure = frozenset(insecure_registries)
        # When each image was last imported or committed (monotonic): ``gc`` spares
        # recent ones, which a control plane may not have recorded yet.
        self._touched: dict[str, float] = {}

    @property
    def layout_dir(self) -> Path:
        return self.root / "oci"

    # --- importing -----------------------------------------------------------

    async def import_image(
        self,
        ref: str,
        name: str,
        on_progress: ProgressCallback | None = None,
        *,
        credentials: RegistryCredentials | None = None,
    ) -> ImageInfo:
        """Copy ``ref`` into the store as ``name`` and unpack it once. Idempotent.

        The copy always runs (skopeo downloads no blob the store already
        has, and for a registry ref it picks up a moved tag); the unpack is
        skipped when that manifest is already unpacked.
        """
        source = normalize_ref(ref)
        validate_name(name)
        secret = credentials.redact if credentials is not None else _same
        progress = _redacting(on_progress or _ignore, secret)
        path = local_path(source)
        # Checked here so that a missing file is a plain 400 whatever skopeo says.
        if path is not None and not Path(path).exists():
            raise ValidationError(f"image source {path} does not exist")
        self._prepare_dirs()
        async with file_lock(
            self.root / ".lock",
            on_wait=lambda: progress("waiting for another image operation to finish…"),
        ):
            await asyncio.to_thread(self._clear_leftovers)
            progress(f"pulling {source}")
            present = self._layout.blob_hexes()
            started = time.monotonic()
            result = await self._copy_in(source, name, credentials, present, progress)
            if not result.ok:
                raise _copy_error(source, result, secret)
            digest = self._layout.digest_of(name)
            self._touched[digest] = time.monotonic()
            self._report_layers(digest, present, time.monotonic() - started, progress)
            if self.has(digest):
                progress(f"{digest} is already unpacked")
            else:
                await self._unpack(name, digest, progress)
        info = self.info(digest)
        progress(f"image {digest} stored as {name} ({human_size(info.size_bytes)})")
        return info

    async def _copy_in(
        self,
        source: str,
        name: str,
        credentials: RegistryCredentials | None,
        present: set[str],
        progress: ProgressCallback,
    ) -> CommandResult:
        registry = registry_host(source)
        argv = ["skopeo", "copy"]
        if registry is not None and is_insecure_registry(registry, self._insecure):
            argv.append("--src-tls-verify=false")
        announced: set[str] = set()

        def on_output(line: str) -> None:
            # skopeo (without a terminal) names each blob as it starts on it
            # and nothing when it is done; a blob the layout already has is
            # reused without a download, so only the others are announced.
            match = _COPYING_BLOB_RE.search(line)
            if match is None:
                return
            short = match.group(1)[:12]
            if short not in announced and not any(h.startswith(short) for h in present):
                announced.add(short)
                progress(f"downloading sha256:{short}…")

        with authfile(credentials, registry, self.root / "tmp") as auth:
            if auth is not None:
                argv += ["--src-authfile", str(auth)]
            argv += [source, f"oci:{self.layout_dir}:{name}"]
            return await self._runner.run(argv, on_output=on_output)

    def _report_layers(self, digest: str, present: set[str], seconds: float, progress: ProgressCallback) -> None:
        layers = [blob for blob in self._layout.manifest(digest).get("layers", []) if isinstance(blob, dict)]
        downloaded = 0
        for number, blob in enumerate(layers, 1):
            hex_ = digest_hex(str(blob.get("digest", "")))
            size = int(blob.get("size", 0))
            if hex_ in present:
                state = "already present"
            else:
                state = "downloaded"
                downloaded += size
                present.add(hex_)  # the same blob twice in one image is fetched once
            progress(f"layer {number}/{len(layers)} sha256:{hex_[:12]} {human_size(size)}: {state}")
        count = "1 layer" if len(layers) == 1 else f"{len(layers)} layers"
        progress(f"pulled {count}, {human_size(downloaded)} downloaded in {seconds:.1f} s")

    async def _unpack(self, name: str, digest: str, progress: ProgressCallback) -> None:
        progress(f"unpacking {digest}")
        work = Path(tempfile.mkdtemp(prefix=f"unpack-{digest_hex(digest)[:12]}-", dir=self.root / "tmp"))
        try:
            bundle = work / "bundle"
            result = await self._runner.run(
                ["umoci", "unpack", "--image", f"{self.layout_dir}:{name}", str(bundle)],
                on_output=lambda line: progress(f"umoci: {line}"),
            )
            if not result.ok:
                raise InternalError(f"umoci unpack of {digest} failed: {_tool_message(result)}")
            _check_unpacked(bundle, digest)
            removed = await asyncio.to_thread(remove_device_nodes, bundle / "rootfs")
            if removed:
                progress(f"removed {removed} device node(s) from the image")
            final = self._bundle_dir(digest)
            if final.exists():
                # A bundle without its rootfs (has() said no): only a hand-edited
                # store gets here. Move it aside so the rename below can publish.
                final.rename(work / "stale")
            # The rename is the publish step: readers see nothing or everything.
            bundle.rename(final)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    # --- reading -------------------------------------------------------------

    def has(self, digest: str) -> bool:
        """Whether ``digest`` (an unpacked base or a committed built image) can be mounted."""
        try:
            self.lower_dirs(digest)
        except NotFoundError:
            return False
        return True

    def lower_dirs(self, digest: str) -> list[Path]:
        """The read-only dirs a sandbox of ``digest`` stacks, top first; never write into them."""
        record = self._record(digest)
        if record is None:
            return [self.rootfs_path(digest)]
        layers = [self.root / "layers" / h for h in record["layers"]]
        if not all(layer.is_dir() for layer in layers):
            raise NotFoundError(f"image {digest} is not in this host's store")
        return [*layers, self.rootfs_path(record["base"])]

    def rootfs_path(self, digest: str) -> Path:
        """The read-only rootfs of an unpacked base image; never write into it."""
        path = self._bundle_dir(digest) / "rootfs"
        if not path.is_dir():
            raise NotFoundError(f"image {digest} is not in this host's store")
        return path

    def kernels(self, digest: str) -> list[dict[str, Any]] | None:
        """The kernels saved with a built image; None for a base image."""
        record = self._record(digest)
        return None if record is None else list(record.get("kernels") or [])

    def info(self, digest: str) -> ImageInfo:
        """Digest and size of an image whose manifest is in the store (unpacked or not)."""
        manifest = self._layout.manifest(digest)
        blobs = [manifest.get("config", {}), *manifest.get("layers", [])]
        size = sum(int(blob.get("size", 0)) for blob in blobs if isinstance(blob, dict))
        return ImageInfo(digest=digest, size_bytes=size)

    def config(self, digest: str) -> ImageConfig:
        """The image's runtime config (Env, WorkingDir, User, Entrypoint, Cmd, Labels)."""
        cfg = self._layout.config(digest).get("config")
        section: dict[str, Any] = cfg if isinstance(cfg, dict) else {}
        return ImageConfig(
            env=tuple(str(v) for v in section.get("Env") or ()),
            working_dir=str(section.get("WorkingDir") or ""),
            user=str(section.get("User") or ""),
            entrypoint=tuple(str(v) for v in section.get("Entrypoint") or ()),
            cmd=tuple(str(v) for v in section.get("Cmd") or ()),
            labels={str(k): str(v) for k, v in (section.get("Labels") or {}).items()},
        )

    def work_dir(self) -> Path:
        """A fresh private dir on the store's filesystem, for a build to prepare a layer in.

        ``commit`` moves the layer out of it; the caller removes the rest.
        """
        self._prepare_dirs()
        return Path(tempfile.mkdtemp(prefix="work-", dir=self.root / "tmp"))

    # --- building, pushing, collecting ----------------------------------------

    async def commit(
        self,
        name: str,
        base_digest: str,
        layer_dir: Path,
        *,
        env: dict[str, str],
        working_dir: str | None,
        user: str | None,
        kernels: list[dict[str, Any]],
        on_progress: ProgressCallback | None = None,
    ) -> ImageInfo:
        """Store ``layer_dir`` (overlayfs format, image ids) as a new layer on ``base_digest``.

        The layer is added to the layout (``umoci raw add-layer``), the config
        gets ``env``/``working_dir``/``user``, the result is tagged ``name``
        and ``layer_dir`` moves to ``layers/`` to be mounted as is.
        """
        validate_name(name)
        digest_hex(base_digest)
        progress = on_progress or _ignore
        tmp = (self.root / "tmp").resolve()
        if not Path(layer_dir).resolve().is_relative_to(tmp):
            raise ValueError(f"layer dir {layer_dir} must be inside a work_dir() of the store")
        for key in env:
            if not key or "=" in key:
                raise ValidationError(f"environment variable name {key!r} is not valid")
        self._prepare_dirs()
        async with file_lock(self.root / ".lock", on_wait=lambda: progress("waiting for the image store…")):
            self.lower_dirs(base_digest)  # NotFoundError unless the base can be mounted
            base_record = self._record(base_digest)
            work = Path(tempfile.mkdtemp(prefix="commit-", dir=tmp))
            try:
                # The layer is mounted as it is: same cleaning as an unpacked image.
                await asyncio.to_thread(remove_device_nodes, layer_dir, keep_whiteouts=True)
                tar = await asyncio.to_thread(write_layer_tar, layer_dir, work / "layer.tar")
                progress(f"committing layer: {tar.files} files, {human_size(tar.size_bytes)}")
                base_tag = f"qbox-base-{digest_hex(base_digest)}"
                self._layout.tag(base_tag, base_digest)
                await self._umoci(["raw", "add-layer", "--image", f"{self.layout_dir}:{base_tag}",
                                   "--tag", name, "--history.created_by", "qbox template build",
                                   str(work / "layer.tar")])
                options = [f"--config.env={key}={value}" for key, value in env.items()]
                if working_dir is not None:
                    options.append(f"--config.workingdir={working_dir}")
                if user is not None:
                    options.append(f"--config.user={user}")
                if options:
                    await self._umoci(["config", "--image", f"{self.layout_dir}:{name}", "--no-history",
                                       *options])
                digest = self._layout.digest_of(name)
                diff_ids = self._layout.config(digest).get("rootfs", {}).get("diff_ids", [])
                if not diff_ids or diff_ids[-1] != tar.diff_id:
                    raise InternalError(f"umoci stored a different layer than {tar.diff_id}")
                layer_hex = digest_hex(tar.diff_id)
                dest = self.root / "layers" / layer_hex
                if dest.exists():
                    # The same changes were committed before: the stored copy is identical.
                    await asyncio.to_thread(shutil.rmtree, layer_dir, True)
                else:
                    os.rename(layer_dir, dest)
                below = list(base_record["layers"]) if base_record is not None else []
                root_base = base_record["base"] if base_record is not None else base_digest
                write_json(self._record_path(digest),
                           {"base": root_base, "layers": [layer_hex, *below], "kernels": kernels})
                self._touched[digest] = self._touched[base_digest] = time.monotonic()
            finally:
                await asyncio.to_thread(shutil.rmtree, work, True)
        return self.info(digest)

    async def push(self, digest: str, dest: str, on_progress: ProgressCallback | None = None) -> str:
        """Copy the image to the registry reference ``dest``; return ``docker://<repo>@<digest>``."""
        target = normalize_ref(dest)
        registry = registry_host(target)
        if registry is None:
            raise ValidationError(f"push destination {dest!r} must be a registry reference")
        progress = on_progress or _ignore
        tag = self._layout.tag_of(digest)
        argv = ["skopeo", "copy"]
        if is_insecure_registry(registry, self._insecure):
            argv.append("--dest-tls-verify=false")
        work = Path(tempfile.mkdtemp(prefix="push-", dir=self.root / "tmp"))
        try:
            digest_file = work / "digest"
            result = await self._runner.run(
                [*argv, "--digestfile", str(digest_file), f"oci:{self.layout_dir}:{tag}", target],
                on_output=lambda line: None,
            )
            if not result.ok:
                raise InternalError(f"push to {target} failed: {_tool_message(result)}")
            pushed = digest_file.read_text().strip()
            digest_hex(pushed)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        name = target.removeprefix("docker://").partition("@")[0]
        repo, colon, tag_part = name.rpartition(":")
        if not colon or "/" in tag_part:
            repo = name
        ref = f"docker://{repo}@{pushed}"
        progress(f"pushed {ref}")
        return ref

    async def gc(self, keep: set[str], in_use: set[str], *,
                 grace_seconds: float = 0.0) -> tuple[list[str], int]:
        """Remove every image not in ``keep`` or ``in_use`` (and not a base of one that is),
        nor imported or committed in the last ``grace_seconds``.

        The grace covers a race: the caller computes ``keep`` from its records,
        and a build may import or commit an image after that and before this
        runs. Returns the removed manifest digests and the bytes freed
        (unpacked trees, layer dirs and blobs).
        """
        now = time.monotonic()
        recent = {d for d, at in self._touched.items() if now - at < grace_seconds}
        needed = set(keep) | set(in_use) | recent
        for digest in needed:
            digest_hex(digest)
        self._prepare_dirs()
        async with file_lock(self.root / ".lock"):
            records = {d: r for d in needed if (r := self._record(d)) is not None}
            needed |= {r["base"] for r in records.values()}
            index = self._layout.index()
            known = {str(e.get("digest")) for e in index["manifests"]}
            known |= {f"sha256:{p.name}" for p in (self.root / "rootfs").iterdir()}
            known |= {f"sha256:{p.stem}" for p in (self.root / "images").glob("*.json")}
            removed = sorted(d for d in known - needed if is_digest(d))
            kept_entries = [e for e in index["manifests"] if e.get("digest") in needed]
            changed = bool(removed) or len(kept_entries) != len(index["manifests"])
            index["manifests"] = kept_entries
            self._layout.write_index(index)
            # A kept image whose name moved on (a rebuild, a re-import) has no
            # tag left: give it one, or umoci gc would drop its manifest.
            tagged = set(self._layout.tags().values())
            for digest in sorted(needed - tagged):
                if self._layout.blob_path(digest).is_file():
                    self._layout.tag(f"qbox-keep-{digest_hex(digest)}", digest)
            freed = 0
            for digest in removed:
                bundle = self._bundle_dir(digest)
                freed += await asyncio.to_thread(tree_size, bundle)
                await asyncio.to_thread(shutil.rmtree, bundle, True)
                self._record_path(digest).unlink(missing_ok=True)
            used_layers = {h for r in records.values() for h in r["layers"]}
            for layer in (self.root / "layers").iterdir():
                if layer.name not in used_layers:
                    freed += await asyncio.to_thread(tree_size, layer)
                    await asyncio.to_thread(shutil.rmtree, layer, True)
            if changed:
                # Seconds on a store with a large image: only when a manifest went away.
                blobs = self.layout_dir / "blobs"
                before = await asyncio.to_thread(tree_size, blobs)
                await self._umoci(["gc", "--layout", str(self.layout_dir)])
                freed += before - await asyncio.to_thread(tree_size, blobs)
            for digest in removed:
                self._touched.pop(digest, None)
            await asyncio.to_thread(self._clear_stale_work_dirs)
        return removed, freed

    async def _umoci(self, args: list[str]) -> None:
        result = await self._runner.run(["umoci", *args])
        if not result.ok:
            raise InternalError(f"umoci {args[0]} failed: {_tool_message(result)}")

    # --- internals -----------------------------------------------------------

    def _bundle_dir(self, digest: str) -> Path:
        return self.root / "rootfs" / digest_hex(digest)

    def _record_path(self, digest: str) -> Path:
        return self.root / "images" / f"{digest_hex(digest)}.json"

    def _record(self, digest: str) -> dict[str, Any] | None:
        """A built image's record, or None for a base image (or an unknown digest)."""
        path = self._record_path(digest)
        if not path.is_file():
            return None
        record = read_json(path)
        if not isinstance(record, dict) or not is_digest(str(record.get("base"))):
            raise InternalError(f"damaged image record {path}")
        for layer in record.get("layers", []):
            digest_hex(f"sha256:{layer}")
        return record

    def _prepare_dirs(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        for sub in _SUBDIRS:
            (self.root / sub).mkdir(exist_ok=True)
            os.chmod(self.root / sub, 0o700)

    def _clear_leftovers(self) -> None:
        for entry in os.scandir(self.root / "tmp"):
            if entry.name.startswith(_LOCKED_TMP_PREFIXES):
                _remove(entry)

    def _clear_stale_work_dirs(self) -> None:
        cutoff = time.time() - _STALE_WORK_DIR_SECONDS
        for entry in os.scandir(self.root / "tmp"):
            if entry.name.startswith("work-") and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                _remove(entry)


def human_size(size: int) -> str:
    """``1.2 MB`` style (powers of 1000, as registries and docker show sizes)."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _check_unpacked(bundle: Path, digest: str) -> None:
    if not (bundle / "rootfs").is_dir():
        raise InternalError(f"umoci unpack of {digest} produced no rootfs")
    # Guards the name→digest step: the bundle must be of the manifest we resolved.
    meta = read_json(bundle / "umoci.json")
    walk = meta.get("from_descriptor_path", {}).get("descriptor_walk", [])
    if walk and walk[0].get("digest") != digest:
        raise InternalError(f"umoci unpacked {walk[0].get('digest')} instead of {digest}")


def _copy_error(ref: str, result: CommandResult, redact: Callable[[str], str]) -> QboxError:
    message = redact(_tool_message(result))
    if any(marker in result.output_tail for marker in _SOURCE_FAILURE_MARKERS):
        return ValidationError(f"cannot read image {ref}: {message}")
    return InternalError(f"skopeo copy of {ref} failed: {message}")


def _tool_message(result: CommandResult, lines: int = 8) -> str:
    """The end of a tool's output, with skopeo's logrus framing taken off."""
    out = []
    for line in result.output_tail.splitlines()[-lines:]:
        match = _LOGRUS_MSG_RE.search(line)
        out.append(match.group(1).replace('\\"', '"') if match else line)
    return " | ".join(out) or f"exit status {result.returncode}"


def _remove(entry: os.DirEntry[str]) -> None:
    if entry.is_dir(follow_symlinks=False):
        shutil.rmtree(entry.path, ignore_errors=True)
    else:
        os.unlink(entry.path)


def _redacting(progress: ProgressCallback, redact: Callable[[str], str]) -> ProgressCallback:
    return lambda line: progress(redact(line))


def _same(text: str) -> str:
    return text


def _ignore(_: str) -> None:
    pass
