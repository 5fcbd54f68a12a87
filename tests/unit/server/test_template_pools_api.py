"""The API of warm pools: templates' codeInterpreter and warmPool (create, PATCH, who may),
the pool's counts, and sandboxes' fromPool, through the app over a real agent."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.server.conftest import Harness, make_harness
from tests.unit.server.helpers import add_user_with_key
from tests.unit.server.test_template_ownership import create, error, ready, spawn

Body = dict[str, Any]
EMPTY_POOL = {"ready": 0, "booting": 0, "claimed": 0}


@pytest.fixture
def h(tmp_path: Path, database: str | None) -> Iterator[Harness]:
    yield from make_harness(tmp_path, database=database, warm_pool_max_size=3)


@pytest.fixture
def pooled_builtins(tmp_path: Path) -> Iterator[Harness]:
    yield from make_harness(tmp_path, database=None, warm_pool_default=2)


def pool_of(h: Harness, template_id: str, key: str | None = None) -> Body:
    r = h.client.get(f"/v1/templates/{template_id}", headers=h.auth(key))
    assert r.status_code == 200, r.text
    return r.json()["warmPool"]  # type: ignore[no-any-return]


def tick(h: Harness) -> None:
    """One turn of the pool loop (the harness runs no background loops)."""
    services = h.client.app.state.services  # type: ignore[attr-defined]
    h.client.portal.call(services.pools.tick)  # type: ignore[union-attr]
    while services.pools._boots:
        h.client.portal.call(_settle, services.pools)  # type: ignore[union-attr]


async def _settle(pools: Any) -> None:
    await asyncio.gather(*pools._boots.values(), return_exceptions=True)


def test_a_new_template_is_lazy_without_a_pool_and_says_so(h: Harness) -> None:
    body = create(h, h.admin_key, "plain")
    assert body["codeInterpreter"] == "lazy"
    assert body["warmPool"] == {"size": 0, "eager": True, **EMPTY_POOL}


def test_an_admin_gives_a_template_a_pool_and_an_eager_interpreter(h: Harness) -> None:
    body = create(h, h.admin_key, "pooled", codeInterpreter="eager", warmPool={"size": 2, "eager": False})
    assert body["codeInterpreter"] == "eager"
    assert body["warmPool"] == {"size": 2, "eager": False, **EMPTY_POOL}
    r = h.client.post("/v1/templates", json={"name": "huge", "imageRef": "busybox:1", "warmPool": {"size": 4}},
                      headers=h.auth())
    assert error(r) == (400, "validation_error")
    assert "warmPool.size" in r.text
    r = h.client.post("/v1/templates", json={"name": "odd", "imageRef": "busybox:1", "codeInterpreter": "soon"},
                      headers=h.auth())
    assert error(r) == (400, "validation_error")


def test_the_built_ins_are_lazy_with_the_default_pool_size(pooled_builtins: Harness) -> None:
    h = pooled_builtins
    body = h.client.get("/v1/templates/tpl_python", headers=h.auth()).json()
    assert body["codeInterpreter"] == "lazy"
    assert body["warmPool"]["size"] == 2
    tick(h)
    assert pool_of(h, "tpl_python")["ready"] == 2 and len(h.agent.sandbox_ids()) == 2
    # An admin turns it off.
    r = h.client.patch("/v1/templates/tpl_python", json={"warmPool": {"size": 0}}, headers=h.auth())
    assert r.status_code == 200 and r.json()["warmPool"]["size"] == 0
    tick(h)
    assert h.agent.sandbox_ids() == []


def test_only_an_admin_gives_a_pool_a_size(h: Harness) -> None:
    _alice_id, alice = add_user_with_key(h.settings.data_dir)
    r = h.client.post("/v1/templates", json={"name": "mine", "imageRef": "busybox:1", "warmPool": {"size": 1}},
                      headers=h.auth(alice))
    assert error(r) == (403, "forbidden")
    create(h, alice, "mine", warmPool={"size": 0, "eager": False})
    r = h.client.patch("/v1/templates/tpl_mine", json={"warmPool": {"size": 1}}, headers=h.auth(alice))
    assert error(r) == (403, "forbidden")
    assert pool_of(h, "tpl_mine", alice)["size"] == 0
    # What is the owner's to decide, the owner changes.
    r = h.client.patch("/v1/templates/tpl_mine", json={"codeInterpreter": "eager", "warmPool": {"eager": True}},
                       headers=h.auth(alice))
    assert r.status_code == 200, r.text
    assert r.json()["codeInterpreter"] == "eager" and r.json()["warmPool"]["eager"] is True
    # An admin may size it; a field left out stays.
    r = h.client.patch("/v1/templates/tpl_mine", json={"warmPool": {"size": 1}}, headers=h.auth())
    assert r.status_code == 200, r.text
    assert r.json()["warmPool"]["size"] == 1 and r.json()["warmPool"]["eager"] is True
    assert r.json()["codeInterpreter"] == "eager"
    # Shrinking to 0 is anyone's who may change it.
    r = h.client.patch("/v1/templates/tpl_mine", json={"warmPool": {"size": 0}}, headers=h.auth(alice))
    assert r.status_code == 200, r.text
    r = h.client.patch("/v1/templates/tpl_mine", json={}, headers=h.auth(alice))
    assert error(r) == (400, "validation_error")


def test_another_member_neither_sees_nor_changes_ones_template(h: Harness) -> None:
    _alice_id, alice = add_user_with_key(h.settings.data_dir)
    _bob_id, bob = add_user_with_key(h.settings.data_dir)
    create(h, alice, "alices")
    assert error(h.client.get("/v1/templates/tpl_alices", headers=h.auth(bob))) == (404, "template_not_found")
    for patch in ({"codeInterpreter": "eager"}, {"warmPool": {"eager": False}}, {"warmPool": {"size": 0}}):
        r = h.client.patch("/v1/templates/tpl_alices", json=patch, headers=h.auth(bob))
        assert error(r) == (404, "template_not_found"), patch
    assert "tpl_alices" not in {t["id"] for t in h.client.get("/v1/templates", headers=h.auth(bob)).json()}
    body = h.client.get("/v1/templates/tpl_alices", headers=h.auth(alice)).json()
    assert body["codeInterpreter"] == "lazy" and body["warmPool"]["eager"] is True


def test_a_pool_shows_its_sandboxes_and_a_sandbox_says_whether_it_came_from_one(h: Harness) -> None:
    create(h, h.admin_key, "counted", warmPool={"size": 2})
    ready(h, h.admin_key, "tpl_counted")
    tick(h)
    assert pool_of(h, "tpl_counted") == {"size": 2, "eager": True, "ready": 2, "booting": 0, "claimed": 0}
    # The pooled sandboxes are no one's: not listed, not found.
    assert h.client.get("/v1/sandboxes", headers=h.auth()).json() == []
    # Without a pool: a cold boot, and fromPool false in every answer.
    create(h, h.admin_key, "unpooled")
    ready(h, h.admin_key, "tpl_unpooled")
    sandbox = spawn(h, h.admin_key, "tpl_unpooled")
    assert sandbox["fromPool"] is False
    got = h.client.get(f"/v1/sandboxes/{sandbox['id']}", headers=h.auth()).json()
    assert got["fromPool"] is False
    assert [s["fromPool"] for s in h.client.get("/v1/sandboxes", headers=h.auth()).json()] == [False]
    # Shrinking the pool sheds its sandboxes, on the host too.
    pooled = set(h.agent.sandbox_ids()) - {sandbox["id"]}
    assert len(pooled) == 2
    r = h.client.patch("/v1/templates/tpl_counted", json={"warmPool": {"size": 0}}, headers=h.auth())
    assert r.status_code == 200
    tick(h)
    assert pool_of(h, "tpl_counted") == {"size": 0, "eager": True, **EMPTY_POOL}
    assert set(h.agent.sandbox_ids()) == {sandbox["id"]}


def test_deleting_a_template_removes_its_pool_from_the_host(h: Harness) -> None:
    create(h, h.admin_key, "doomed", warmPool={"size": 1})
    ready(h, h.admin_key, "tpl_doomed")
    tick(h)
    assert len(h.agent.sandbox_ids()) == 1
    assert h.client.delete("/v1/templates/tpl_doomed", headers=h.auth()).status_code == 204
    assert h.agent.sandbox_ids() == []
