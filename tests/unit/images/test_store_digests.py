"""ImageStore.digests: the images a sandbox can start from on this host (what /health
reports for the scheduler): unpacked bases and built images whose layers are all there."""

from __future__ import annotations

import json
from pathlib import Path

from qbox.agent.images import ImageStore

from .fakes import image_runner

REF = "docker://registry.example/team/python:3.12"
BUILT = "sha256:" + "b" * 64


async def test_digests_are_the_mountable_images(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images", runner=image_runner())
    assert store.digests() == []  # a store never written to
    base = (await store.import_image(REF, "python")).digest
    (store.root / "layers" / ("1" * 64)).mkdir(parents=True)
    records = store.root / "images"
    records.mkdir(exist_ok=True)
    (records / f"{'b' * 64}.json").write_text(json.dumps({"base": base, "layers": ["1" * 64]}))
    # A built image whose layer is gone, and a record that is not one: neither can start.
    (records / f"{'c' * 64}.json").write_text(json.dumps({"base": base, "layers": ["2" * 64]}))
    (records / f"{'d' * 64}.json").write_text("[]")
    (store.root / "rootfs" / "not-a-digest" / "rootfs").mkdir(parents=True)

    assert store.digests() == sorted([base, BUILT])
