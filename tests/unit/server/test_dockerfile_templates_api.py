"""Templates from a Dockerfile over the API: the context upload (owner, size cap, tar checks),
the body's rules, the FROM images' pull policy, and what the template row and view hold.
The build itself is exercised with real buildah in tests/integration/test_dockerfile_e2e.py."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from qbox.server.db.tables import BuildContext, Template
from tests.unit.server.conftest import Harness, make_harness
from tests.unit.server.helpers import add_user_with_key, db_session
from tests.unit.server.test_templates_api import until

# Never resolves: the agent's pull fails at once, and the control plane lets it through.
BASE = "registry.invalid/base:1"
DOCKERFILE = f"ARG BASE={BASE}\nFROM $BASE\nCOPY app.txt /app.txt\n"
Body = dict[str, Any]


def tar_of(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.fixture
def small(tmp_path: Path, database: str | None) -> Iterator[Harness]:
    yield from make_harness(tmp_path, database=database, max_build_context_bytes=64 * 1024)


def upload(h: Harness, key: str, data: bytes) -> Any:
    return h.client.post("/v1/build-contexts", content=data, headers={
        **h.auth(key), "Content-Type": "application/gzip"})


def error(r: Any) -> tuple[int, str]:
    return r.status_code, r.json()["error"]["code"]


def test_upload_then_create_and_rebuild(small: Harness) -> None:
    h = small
    _alice_id, alice = add_user_with_key(h.settings.data_dir)
    data = tar_of({"app.txt": b"hello\n"})
    r = upload(h, alice, data)
    assert r.status_code == 201, r.text
    context = r.json()
    assert context["id"].startswith("bctx_") and context["sizeBytes"] == len(data)
    audit = _entries(h, "build_context.create")
    assert [(e["targetId"], e["outcome"], e["actorId"]) for e in audit] == [(context["id"], 201, _alice_id)]
    assert audit[0]["detail"] == f"sizeBytes={len(data)} sha256={context['sha256']}"
    r = h.client.post("/v1/templates", json={
        "name": "from-df", "dockerfile": DOCKERFILE, "buildContextId": context["id"],
        "buildArgs": {"X": "1"}}, headers=h.auth(alice))
    assert r.status_code == 201, r.text
    template: Body = r.json()
    assert template["source"] == "dockerfile" and template["imageRef"] == ""
    assert template["buildContextId"] == context["id"] and template["buildArgs"] == {"X": "1"}
    assert template["builtFromTemplateId"] is None and "gitUrl" not in template
    with db_session(h.settings.data_dir) as session:
        row = session.get(Template, "tpl_from-df")
        assert row is not None and row.dockerfile == DOCKERFILE and row.build_context_id == context["id"]
        stored = session.get(BuildContext, context["id"])
        assert stored is not None and stored.data == data
    # This agent (a fake runtime, no user namespace) refuses the build, and the log says why;
    # the context it was sent is gone after the build. A rebuild takes the same inputs.
    failed = _settled(h, alice, "tpl_from-df")
    assert failed["status"] == "failed", failed
    log = h.client.get("/v1/templates/tpl_from-df/build-log", headers=h.auth(alice)).text
    assert "building a Dockerfile" in log and "user namespace" in failed["buildError"], log
    assert not list((h.agent.settings.data_dir / "build-contexts").iterdir())
    r = h.client.post("/v1/templates/tpl_from-df/rebuild", headers=h.auth(alice))
    assert r.status_code == 202, r.text
    assert _settled(h, alice, "tpl_from-df")["status"] == "failed"


def _entries(h: Harness, action: str) -> list[Body]:
    def found() -> list[Body]:
        rows: list[Body] = h.client.get("/v1/audit?limit=100", headers=h.auth()).json()["data"]
        return [e for e in rows if e["action"] == action]
    return until(found)  # type: ignore[no-any-return]


def _settled(h: Harness, key: str, template_id: str) -> Body:
    def done() -> Body | None:
        body: Body = h.client.get(f"/v1/templates/{template_id}", headers=h.auth(key)).json()
        return body if body["status"] != "building" else None
    return until(done, 30)  # type: ignore[no-any-return]


def test_another_members_context_is_not_found(small: Harness) -> None:
    h = small
    _a, alice = add_user_with_key(h.settings.data_dir)
    _b, bob = add_user_with_key(h.settings.data_dir)
    context = upload(h, alice, tar_of({"app.txt": b"secret"})).json()
    for key in (bob, h.admin_key):
        r = h.client.post("/v1/templates", json={
            "name": "stolen", "dockerfile": DOCKERFILE, "buildContextId": context["id"]},
            headers=h.auth(key))
        assert error(r) == (404, "not_found"), r.text
        assert "secret" not in r.text
    r = h.client.post("/v1/templates", json={
        "name": "stolen", "dockerfile": DOCKERFILE, "buildContextId": "bctx_nosuch"}, headers=h.auth(bob))
    assert error(r) == (404, "not_found")


def test_the_size_cap_is_413_and_a_bad_tar_400(small: Harness) -> None:
    h = small
    big = tar_of({"big.bin": os.urandom(80 * 1024)})
    assert len(big) > 64 * 1024
    r = upload(h, h.admin_key, big)
    assert error(r) == (413, "payload_too_large"), r.text
    bad = io.BytesIO()
    with tarfile.open(fileobj=bad, mode="w") as tar:
        info = tarfile.TarInfo("../escape")
        tar.addfile(info, io.BytesIO(b""))
    r = upload(h, h.admin_key, bad.getvalue())
    assert error(r) == (400, "validation_error") and "'..'" in r.json()["error"]["message"]
    r = upload(h, h.admin_key, b"this is no tar" * 100)
    assert error(r) == (400, "validation_error")
    with db_session(h.settings.data_dir) as session:
        assert session.query(BuildContext).count() == 0


@pytest.mark.parametrize(("body", "field"), [
    ({"imageRef": "busybox:1", "dockerfile": DOCKERFILE}, "body"),
    ({}, "body"),
    ({"dockerfile": DOCKERFILE, "steps": [{"run": "true"}]}, "body"),
    ({"imageRef": "busybox:1", "buildArgs": {"A": "1"}}, "body"),
    ({"dockerfile": "RUN true\n"}, "dockerfile"),
    ({"dockerfile": "FROM oci:/srv/images/x:1\n"}, "dockerfile"),
    ({"dockerfile": "FROM 127.0.0.1:5000/x:1\n"}, "dockerfile"),
    ({"dockerfile": "ARG B=10.0.0.8:5000/x\nFROM $B\n"}, "dockerfile"),
    ({"dockerfile": f"FROM {BASE}\nCOPY --from=169.254.169.254/x:1 / /\n"}, "dockerfile"),
    ({"dockerfile": DOCKERFILE, "buildArgs": {"A=B": "1"}}, "buildArgs"),
])
def test_body_rules(harness: Harness, body: Body, field: str) -> None:
    r = harness.client.post("/v1/templates", json={"name": "bad", **body}, headers=harness.auth())
    assert error(r) == (400, "validation_error"), r.text
    details = r.json()["error"]["details"]
    if field != "body":
        assert details.get("field") == field, details
    assert harness.client.get("/v1/templates/tpl_bad", headers=harness.auth()).status_code == 404


def test_without_a_context_the_name_rules_still_hold(harness: Harness) -> None:
    h = harness
    r = h.client.post("/v1/templates", json={"name": "df", "dockerfile": f"FROM {BASE}\n"},
                      headers=h.auth())
    assert r.status_code == 201, r.text
    assert r.json()["buildContextId"] is None
    r = h.client.post("/v1/templates", json={"name": "df", "dockerfile": f"FROM {BASE}\n"},
                      headers=h.auth())
    assert error(r) == (409, "conflict")


def test_a_name_freed_by_a_dockerfile_template_makes_a_plain_image_template(harness: Harness) -> None:
    h = harness
    r = h.client.post("/v1/templates", json={"name": "reused", "dockerfile": DOCKERFILE,
                                             "buildArgs": {"A": "1"}}, headers=h.auth())
    assert r.status_code == 201, r.text
    _settled(h, h.admin_key, "tpl_reused")
    # A sandbox's history keeps the row (a tombstone) that the next template of the name reuses.
    with db_session(h.settings.data_dir) as session:
        row = session.get(Template, "tpl_reused")
        assert row is not None
        row.status, row.built_from_template_id = "deleted", "tpl_old"
        session.commit()
    r = h.client.post("/v1/templates", json={"name": "reused", "imageRef": BASE}, headers=h.auth())
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["source"] == "image" and body["imageRef"] == BASE and body["builtFromTemplateId"] is None
    assert "buildArgs" not in body
    with db_session(h.settings.data_dir) as session:
        row = session.get(Template, "tpl_reused")
        assert row is not None and row.dockerfile is None and row.build_args == {}


def test_old_contexts_no_template_uses_go_with_their_owners_next_upload(harness: Harness) -> None:
    h = harness
    _a, alice = add_user_with_key(h.settings.data_dir)
    _b, bob = add_user_with_key(h.settings.data_dir)
    data = tar_of({"app.txt": b"x"})
    unused, used = (upload(h, alice, data).json()["id"] for _ in range(2))
    bobs = upload(h, bob, data).json()["id"]
    r = h.client.post("/v1/templates", json={"name": "keeps", "dockerfile": DOCKERFILE, "buildContextId": used},
                      headers=h.auth(alice))
    assert r.status_code == 201, r.text
    with db_session(h.settings.data_dir) as session:
        for row in session.query(BuildContext):
            row.created_at = row.created_at - timedelta(days=2)
        session.commit()
    fresh = upload(h, alice, data).json()["id"]
    with db_session(h.settings.data_dir) as session:
        assert {row.id for row in session.query(BuildContext)} == {used, bobs, fresh}
