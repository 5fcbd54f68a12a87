"""The agent checks a build's image ref again (issue 13, finding 9): never its own store, never
a host path outside the import dirs, never an internal registry it does not trust; and what
went wrong with a host path is told in one sentence, whether the path exists or not."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from qbox.agent.app import create_app
from qbox.agent.images.build import BuildJob
from qbox.protocol.images import BuildRequest
from qbox.agent.runtime.fake import FakeRuntime
from qbox.agent.settings import AgentSettings
from qbox.core.errors import InternalError, QboxError, ValidationError
from qbox.core.image_refs import LOCAL_SOURCE_UNUSABLE
from tests.unit.agent.test_builds import BuildStore, _manager

SECRET = "s"


@pytest.fixture
def store(tmp_path: Path) -> BuildStore:
    return BuildStore(tmp_path / "images")


def settings_for(tmp_path: Path, **extra: Any) -> AgentSettings:
    return AgentSettings(data_dir=tmp_path / "data", secret=SECRET, runtime="fake", prepare_host=False,
                         **extra)


@pytest.fixture
async def agent(tmp_path: Path, store: BuildStore) -> AsyncIterator[httpx.AsyncClient]:
    (tmp_path / "imports").mkdir()
    settings = settings_for(tmp_path, import_dirs=(str(tmp_path / "imports"),),
                            trusted_registries=("127.0.0.1:5005",))
    app = create_app(settings, runtime=FakeRuntime(), store=store)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://agent/internal/v1",
                                     headers={"Authorization": f"Bearer {SECRET}"}) as http:
            yield http


async def build(agent: httpx.AsyncClient, ref: str) -> dict[str, Any]:
    async with agent.stream("POST", "/builds", json={"name": "demo", "ref": ref}) as response:
        assert response.status_code == 200
        lines = [line async for line in response.aiter_lines() if line]
    return httpx.Response(200, content=lines[-1]).json()  # type: ignore[no-any-return]


@pytest.mark.parametrize("where", ["data/images/oci:python", "data/../data/images/oci:x",
                                   "imports/../data/images/oci:x"])
async def test_the_agents_own_store_is_never_a_source(agent: httpx.AsyncClient, store: BuildStore,
                                                      tmp_path: Path, where: str) -> None:
    end = await build(agent, f"oci:{tmp_path}/{where}")
    assert end["type"] == "error" and end["code"] == "validation_error"
    assert end["message"] == LOCAL_SOURCE_UNUSABLE
    assert store.imported == []


async def test_a_symlink_out_of_an_import_dir_is_refused(agent: httpx.AsyncClient, store: BuildStore,
                                                         tmp_path: Path) -> None:
    (tmp_path / "imports" / "store").symlink_to(tmp_path / "data")
    (tmp_path / "imports" / "etc").symlink_to("/etc")
    for ref in (f"oci:{tmp_path}/imports/store/images/oci:x", f"oci-archive:{tmp_path}/imports/etc/shadow"):
        end = await build(agent, ref)
        assert (end["code"], end["message"]) == ("validation_error", LOCAL_SOURCE_UNUSABLE), ref
    assert store.imported == []


@pytest.mark.parametrize("ref", ["oci:/proc/1/environ", "oci:/nonexistent/x:1", "oci-archive:/etc/shadow"])
async def test_host_paths_outside_the_import_dirs_get_one_answer(agent: httpx.AsyncClient, store: BuildStore,
                                                                 ref: str) -> None:
    end = await build(agent, ref)
    assert (end["code"], end["message"]) == ("validation_error", LOCAL_SOURCE_UNUSABLE)
    assert store.imported == []


@pytest.mark.parametrize("ref", ["docker://127.0.0.1:8080/x", "localhost:5000/x", "[::1]:5000/x",
                                 "169.254.169.254/x", "dir:/tmp/x", "docker-daemon:x:1"])
async def test_internal_registries_and_host_transports_are_refused(agent: httpx.AsyncClient,
                                                                   store: BuildStore, ref: str) -> None:
    end = await build(agent, ref)
    assert end["type"] == "error" and end["code"] == "validation_error", end
    assert store.imported == []


async def test_trusted_registries_and_import_dirs_are_pulled(agent: httpx.AsyncClient, store: BuildStore,
                                                             tmp_path: Path) -> None:
    for ref in ("docker://127.0.0.1:5005/team/base:1", f"oci:{tmp_path}/imports/layout:1"):
        end = await build(agent, ref)
        assert end["type"] == "result", end
    assert [ref for ref, _name in store.imported] == ["docker://127.0.0.1:5005/team/base:1",
                                                      f"oci:{tmp_path}/imports/layout:1"]


class FailingStore(BuildStore):
    def __init__(self, root: Path, error: QboxError) -> None:
        super().__init__(root)
        self.error = error

    async def import_image(self, ref: str, name: str, on_progress: Any = None, **_: Any) -> Any:
        raise self.error


@pytest.mark.parametrize("error", [
    ValidationError("image source /srv/imports/missing does not exist"),
    ValidationError("cannot read image oci:/srv/imports/x: open /srv/imports/x/index.json: permission denied"),
    InternalError("skopeo copy of oci:/srv/imports/x failed: open /srv/imports/x/blobs: no such file"),
])
async def test_a_failed_local_import_never_says_why(tmp_path: Path, error: QboxError) -> None:
    store = FailingStore(tmp_path / "images", error)
    policy = settings_for(tmp_path, import_dirs=("/srv/imports",)).build_ref_policy(tmp_path / "base")
    request = BuildRequest.model_validate({"name": "demo", "ref": "oci:/srv/imports/x:1"})
    events = [e async for e in BuildJob(request, store, _manager(tmp_path, store), policy=policy).events()]
    text = " ".join(str(e.get("line") or e.get("message")) for e in events)
    assert LOCAL_SOURCE_UNUSABLE in events[-1]["message"]
    for secret in ("does not exist", "permission denied", "no such file", "index.json", "blobs"):
        assert secret not in text


async def test_a_failed_registry_pull_still_says_why(tmp_path: Path) -> None:
    store = FailingStore(tmp_path / "images", ValidationError("cannot read image docker://ghcr.io/x: unauthorized"))
    request = BuildRequest.model_validate({"name": "demo", "ref": "ghcr.io/x:1"})
    events = [e async for e in BuildJob(request, store, _manager(tmp_path, store)).events()]
    assert events[-1]["message"] == "cannot read image docker://ghcr.io/x: unauthorized"


async def test_the_images_route_never_imports_from_the_data_dir(agent: httpx.AsyncClient,
                                                                store: BuildStore, tmp_path: Path) -> None:
    r = await agent.post("/images", json={"ref": f"oci:{tmp_path}/data/images/oci:python", "name": "x"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "validation_error"
    assert store.imported == []
    r = await agent.post("/images", json={"ref": f"oci:{tmp_path}/imports/base:1", "name": "x"})
    assert r.status_code == 200, r.text
