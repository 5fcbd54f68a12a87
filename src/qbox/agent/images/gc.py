"""Collecting the images nobody keeps or uses: their manifests, unpacked trees, layers and blobs.

A kept built image keeps its base; an image imported or committed within the
grace is kept too (its template may not be recorded yet). ``umoci gc`` frees
the blobs, and runs only when a manifest actually went away: it takes
seconds on a store with a large image.
"""

from __future__ import annotations

import asyncio
import shutil
import time

from qbox.agent.images.layers import tree_size
from qbox.agent.images.lock import file_lock
from qbox.agent.images.refs import digest_hex, is_digest
from qbox.agent.images.runner import CommandRunner, run_umoci
from qbox.agent.images.store_tree import StoreTree


async def collect_garbage(
    tree: StoreTree, runner: CommandRunner, keep: set[str], in_use: set[str], grace_seconds: float
) -> tuple[list[str], int]:
    """Remove what ``keep``, ``in_use`` and the grace do not hold (see ``ImageStore.gc``)."""
    now = time.monotonic()
    recent = {d for d, at in tree.touched.items() if now - at < grace_seconds}
    needed = set(keep) | set(in_use) | recent
    for digest in needed:
        digest_hex(digest)
    tree.prepare_dirs()
    async with file_lock(tree.lock_path):
        records = {d: r for d in needed if (r := tree.record(d)) is not None}
        needed |= {r["base"] for r in records.values()}
        index = tree.layout.index()
        known = {str(e.get("digest")) for e in index["manifests"]}
        known |= {f"sha256:{p.name}" for p in (tree.root / "rootfs").iterdir()}
        known |= {f"sha256:{p.stem}" for p in (tree.root / "images").glob("*.json")}
        removed = sorted(d for d in known - needed if is_digest(d))
        kept_entries = [e for e in index["manifests"] if e.get("digest") in needed]
        changed = bool(removed) or len(kept_entries) != len(index["manifests"])
        index["manifests"] = kept_entries
        tree.layout.write_index(index)
        # A kept image whose name moved on (a rebuild, a re-import) has no
        # tag left: give it one, or umoci gc would drop its manifest.
        tagged = set(tree.layout.tags().values())
        for digest in sorted(needed - tagged):
            if tree.layout.blob_path(digest).is_file():
                tree.layout.tag(f"qbox-keep-{digest_hex(digest)}", digest)
        freed = 0
        for digest in removed:
            bundle = tree.bundle_dir(digest)
            freed += await asyncio.to_thread(tree_size, bundle)
            await asyncio.to_thread(shutil.rmtree, bundle, True)
            tree.record_path(digest).unlink(missing_ok=True)
        used_layers = {h for r in records.values() for h in r["layers"]}
        for layer in (tree.root / "layers").iterdir():
            if layer.name not in used_layers:
                freed += await asyncio.to_thread(tree_size, layer)
                await asyncio.to_thread(shutil.rmtree, layer, True)
        if changed:
            blobs = tree.layout_dir / "blobs"
            before = await asyncio.to_thread(tree_size, blobs)
            await run_umoci(runner, ["gc", "--layout", str(tree.layout_dir)])
            freed += before - await asyncio.to_thread(tree_size, blobs)
        for digest in removed:
            tree.touched.pop(digest, None)
        await asyncio.to_thread(tree.clear_stale_work_dirs)
    return removed, freed
