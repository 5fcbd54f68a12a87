"""A template's imageRef is checked when it is created and rebuilt (issue 13, finding 9): members
use registries only, never internal addresses unless trusted; local sources are for admins, inside
the import dirs; any other transport is a 400 before anything is stored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from qbox.server.db.tables import Template
from tests.unit.server.conftest import Harness, make_harness
from tests.unit.server.helpers import add_user_with_key, db_session
from tests.unit.server.test_template_ownership import error, ready

AGENT_STORE_REF = "oci:/var/lib/qbox/images/oci:python"


def post(h: Harness, image_ref: str, key: str | None = None, name: str = "img") -> Any:
    return h.client.post("/v1/templates", json={"name": name, "imageRef": image_ref}, headers=h.auth(key))


def nothing_stored(h: Harness, name: str = "img") -> None:
    assert error(h.client.get(f"/v1/templates/tpl_{name}", headers=h.auth())) == (404, "template_not_found")
    assert h.agent.builds == []


@pytest.fixture
def member(harness: Harness) -> str:
    return add_user_with_key(harness.settings.data_dir)[1]


def test_finding_9_a_member_cannot_build_from_the_agents_own_store(harness: Harness, member: str) -> None:
    r = post(harness, AGENT_STORE_REF, member)
    assert error(r) == (403, "forbidden"), r.text
    nothing_stored(harness)
    # Nor may an admin, outside the import dirs (none are configured here).
    r = post(harness, AGENT_STORE_REF)
    assert error(r) == (400, "validation_error"), r.text
    nothing_stored(harness)


@pytest.mark.parametrize("ref", ["oci:/proc/1/environ", "oci-archive:/etc/shadow", "oci:/nonexistent/x:1"])
def test_finding_9_host_paths_get_one_answer_whether_they_exist_or_not(harness: Harness, ref: str) -> None:
    r = post(harness, ref)
    assert error(r) == (400, "validation_error")
    assert r.json()["error"]["message"] == (
        "the local image source cannot be used (not an image in an import directory)")
    nothing_stored(harness)


@pytest.mark.parametrize("ref", ["docker://127.0.0.1:8080/v1/sandboxes:latest", "localhost:8080/x",
                                 "[::1]:8080/x", "127.1:8080/x", "0x7f000001:8080/x", "169.254.169.254/x"])
def test_finding_9_loopback_and_internal_registries_are_refused(harness: Harness, member: str, ref: str) -> None:
    for key in (member, None):
        r = post(harness, ref, key)
        assert error(r) == (400, "validation_error"), (ref, r.text)
        assert r.json()["error"]["details"]["field"] == "imageRef"
    nothing_stored(harness)


@pytest.mark.parametrize("ref", ["dir:/tmp/x", "docker-daemon:python:3", "tarball:/tmp/x.tar",
                                 "containers-storage:python", "http://registry.example.com/x"])
def test_finding_9_refused_transports_are_a_400_at_create(harness: Harness, member: str, ref: str) -> None:
    for key in (member, None):
        assert error(post(harness, ref, key)) == (400, "validation_error"), ref
    nothing_stored(harness)


@pytest.fixture
def configured(tmp_path: Path, database: str | None) -> Iterator[Harness]:
    yield from make_harness(tmp_path / "data", database=database, trusted_registries="127.0.0.1:5000",
                            import_dirs="/srv/qbox-imports")


def test_operators_trust_registries_and_name_import_dirs(configured: Harness) -> None:
    h = configured
    _member_id, member = add_user_with_key(h.settings.data_dir)
    assert post(h, "127.0.0.1:5000/team/app:1", member, "from-lan").status_code == 201
    assert error(post(h, "127.0.0.1:5001/team/app:1", member, "other-port")) == (400, "validation_error")
    assert error(post(h, "oci-archive:/srv/qbox-imports/app.tar", member, "member-local")) == (403, "forbidden")
    assert post(h, "oci-archive:/srv/qbox-imports/app.tar", None, "admin-local").status_code == 201
    r = post(h, "oci-archive:/srv/qbox-imports/../../var/lib/qbox/images/x.tar", None, "escape")
    assert error(r) == (400, "validation_error")
    assert [b["ref"] for b in h.agent.builds] == ["127.0.0.1:5000/team/app:1",
                                                  "oci-archive:/srv/qbox-imports/app.tar"]


def test_a_rebuild_checks_the_ref_again(configured: Harness) -> None:
    h = configured
    _member_id, member = add_user_with_key(h.settings.data_dir)
    assert post(h, "127.0.0.1:5000/team/app:1", member, "mine").status_code == 201
    ready(h, member, "tpl_mine")
    # A ref stored before the policy (or by hand) that the member may not use.
    with db_session(h.settings.data_dir) as session:
        session.execute(update(Template).where(Template.id == "tpl_mine").values(image_ref=AGENT_STORE_REF))
        session.commit()
    r = h.client.post("/v1/templates/tpl_mine/rebuild", headers=h.auth(member))
    assert error(r) == (403, "forbidden")
    r = h.client.post("/v1/templates/tpl_mine/rebuild", headers=h.auth())
    assert error(r) == (400, "validation_error")
    assert len(h.agent.builds) == 1
    assert h.client.get("/v1/templates/tpl_mine", headers=h.auth(member)).json()["status"] == "ready"
