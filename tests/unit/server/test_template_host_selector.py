"""A template's hostSelector: set on POST /v1/templates and PATCH, shown on GET, validated."""

from __future__ import annotations

from typing import Any

from tests.unit.server.conftest import Harness
from tests.unit.server.helpers import add_user_with_key
from tests.unit.server.test_template_ownership import create, error

Body = dict[str, Any]


def test_a_selector_is_stored_shown_replaced_and_removed(harness: Harness) -> None:
    h = harness
    made = create(h, h.admin_key, "gpu-tools", hostSelector={"gpu": "true", "zone": "eu-1/b"})
    assert made["hostSelector"] == {"gpu": "true", "zone": "eu-1/b"}
    url = "/v1/templates/tpl_gpu-tools"
    assert h.client.get(url, headers=h.auth()).json()["hostSelector"] == {"gpu": "true", "zone": "eu-1/b"}
    listed = {t["id"]: t for t in h.client.get("/v1/templates", headers=h.auth()).json()}
    assert listed["tpl_gpu-tools"]["hostSelector"] == {"gpu": "true", "zone": "eu-1/b"}
    assert listed["tpl_python"]["hostSelector"] == {}
    # A PATCH replaces the whole selector and leaves what it does not name alone.
    r = h.client.patch(url, json={"hostSelector": {"disk": "ssd", "tier": ""}}, headers=h.auth())
    assert r.status_code == 200, r.text
    assert r.json()["hostSelector"] == {"disk": "ssd", "tier": ""} and r.json()["public"] is False
    r = h.client.patch(url, json={"public": True}, headers=h.auth())
    assert r.json()["hostSelector"] == {"disk": "ssd", "tier": ""} and r.json()["public"] is True
    assert h.client.patch(url, json={"hostSelector": {}}, headers=h.auth()).json()["hostSelector"] == {}
    assert h.client.get(url, headers=h.auth()).json()["hostSelector"] == {}


def test_a_template_made_without_a_selector_has_an_empty_one(harness: Harness) -> None:
    assert create(harness, harness.admin_key, "plain")["hostSelector"] == {}


BAD_SELECTORS = [
    {f"k{n}": "v" for n in range(17)},          # more than 16
    {"k" * 64: "v"},                            # key over 63
    {"gpu": "v" * 64},                          # value over 63
    {"": "true"},                               # empty key
    {"gpu type": "true"},                       # space
    {"gpu": "yes please"},
    {"gpü": "true"},                            # not ASCII
    {"-gpu": "true"},                           # a key starts with a letter or digit
    {"gpu": "tr\nue"},
    {"gpu": True},                              # values are strings
    {"gpu": None},
]


def test_a_bad_selector_is_refused_on_create(harness: Harness) -> None:
    for selector in BAD_SELECTORS:
        r = harness.client.post("/v1/templates", json={"name": "bad", "imageRef": "busybox:1",
                                                       "hostSelector": selector}, headers=harness.auth())
        assert error(r) == (400, "validation_error"), selector
    assert harness.client.get("/v1/templates/tpl_bad", headers=harness.auth()).status_code == 404


def test_a_bad_selector_is_refused_on_patch_and_changes_nothing(harness: Harness) -> None:
    h = harness
    url = "/v1/templates/tpl_python"
    assert h.client.patch(url, json={"hostSelector": {"zone": "a"}}, headers=h.auth()).status_code == 200
    for selector in [*BAD_SELECTORS, ["gpu=true"], "gpu=true"]:
        r = h.client.patch(url, json={"hostSelector": selector, "public": True}, headers=h.auth())
        assert error(r) == (400, "validation_error"), selector
    assert h.client.get(url, headers=h.auth()).json()["hostSelector"] == {"zone": "a"}


def test_the_longest_selector_allowed_is_kept_whole(harness: Harness) -> None:
    selector = {f"k{n}.example.com/{'x' * 40}"[:63]: "v" * 63 for n in range(16)}
    assert create(harness, harness.admin_key, "wide", hostSelector=selector)["hostSelector"] == selector


def test_the_owner_sets_the_selector_others_may_not(harness: Harness) -> None:
    h = harness
    _alice_id, alice = add_user_with_key(h.settings.data_dir)
    _bob_id, bob = add_user_with_key(h.settings.data_dir)
    create(h, alice, "hers")
    url = "/v1/templates/tpl_hers"
    r = h.client.patch(url, json={"hostSelector": {"gpu": "true"}}, headers=h.auth(alice))
    assert r.status_code == 200 and r.json()["hostSelector"] == {"gpu": "true"}
    # Private to Alice: Bob is told it does not exist.
    assert error(h.client.patch(url, json={"hostSelector": {}}, headers=h.auth(bob))) == (
        404, "template_not_found")
    # Public, Bob sees it but it is not his to change; Alice still may not make it private.
    assert h.client.patch(url, json={"public": True}, headers=h.auth()).status_code == 200
    assert error(h.client.patch(url, json={"hostSelector": {}}, headers=h.auth(bob))) == (403, "forbidden")
    assert error(h.client.patch(url, json={"hostSelector": {}, "public": False},
                                headers=h.auth(alice))) == (403, "forbidden")
    # Refused whole: the selector of the refused PATCH was not applied either.
    assert h.client.get(url, headers=h.auth(alice)).json()["hostSelector"] == {"gpu": "true"}
    # Built-ins are an admin's to change.
    assert error(h.client.patch("/v1/templates/tpl_python", json={"hostSelector": {"gpu": "true"}},
                                headers=h.auth(alice))) == (403, "forbidden")


def test_a_spawn_no_host_matches_is_refused_saying_so_and_leaves_nothing(harness: Harness) -> None:
    h = harness
    url = "/v1/templates/tpl_python"
    assert h.client.patch(url, json={"hostSelector": {"gpu": "true"}}, headers=h.auth()).status_code == 200
    r = h.client.post("/v1/sandboxes", json={"templateId": "tpl_python"}, headers=h.auth())
    assert error(r) == (503, "host_no_capacity"), r.text
    refusal = r.json()["error"]
    assert "host selector gpu=true" in refusal["message"]
    assert refusal["details"]["reasons"] == {"selector": 1}
    assert refusal["details"]["hostSelector"] == {"gpu": "true"} and refusal["details"]["transient"] is True
    assert r.headers["Retry-After"]
    assert h.client.get("/v1/sandboxes", headers=h.auth()).json() == []
