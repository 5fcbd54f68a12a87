"""Templates built from OCI images, end to end: a real registry, skopeo, umoci and crun.

The session's `qbox up` runs with ``QBOX_REGISTRY`` pointing at the session
registry (conftest.py): every build here is pushed, as it is in a deployment
with a registry, and the push is checked once.

Images are busybox-static in two layers (tests/oci_images.py), pushed to a
docker-registry on 127.0.0.1. Each test deletes the templates and sandboxes
it made, also when it fails.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.oci_images import (
    busybox_layers,
    busybox_layout,
    hostile_layout,
    hostile_marker,
    hostile_tricks,
    layer_tar,
    oci_archive,
    write_layout,
)
from tests.qbox_process import QboxUp
from tests.registry import BUSYBOX_REPO, inspect

pytestmark = pytest.mark.integration

BUILD_TIMEOUT = 120.0

Json = dict[str, Any]


# --- module fixtures: images, registry, qbox ------------------------------------------------


@pytest.fixture(scope="module")
def scratch(import_dir: Path) -> Iterator[Path]:
    # In the qbox's import dir: the image files built from here are found by admins' builds.
    path = Path(tempfile.mkdtemp(prefix="qbox-tpl-it-", dir=import_dir))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def busybox_ref(scratch: Path) -> str:
    return busybox_layout(scratch / "busybox")


@pytest.fixture(scope="module")
def busybox_image(registry: str) -> str:
    """The image as users name it: a registry reference without a transport."""
    return f"{registry}/{BUSYBOX_REPO}"


# --- helpers ----------------------------------------------------------------------------------


def build_log(api: httpx.Client, template_id: str) -> str:
    r = api.get(f"/v1/templates/{template_id}/build-log")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain"), r.headers
    return r.text


def wait_built(api: httpx.Client, template_id: str, timeout: float = BUILD_TIMEOUT) -> Json:
    """The template once it is ready or failed (polled; fails the test after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        r = api.get(f"/v1/templates/{template_id}")
        assert r.status_code == 200, r.text
        body: Json = r.json()
        if body["status"] in ("ready", "failed"):
            return body
        if time.monotonic() > deadline:
            pytest.fail(f"{template_id} still {body['status']} after {timeout} s; log:\n"
                        f"{build_log(api, template_id)}")
        time.sleep(0.25)


def assert_ready(api: httpx.Client, template: Json) -> None:
    assert template["status"] == "ready", (template, build_log(api, template["id"]))


def remove_template(api: httpx.Client, template_id: str) -> None:
    """Kill the template's sandboxes, then delete it (a build still running is cancelled)."""
    for sb in api.get("/v1/sandboxes", params={"templateId": template_id}).json():
        if sb["status"] in ("pending", "booting", "running", "paused"):
            api.delete(f"/v1/sandboxes/{sb['id']}")
    deadline = time.monotonic() + 30
    while True:
        r = api.delete(f"/v1/templates/{template_id}")
        if r.status_code in (204, 404) or time.monotonic() > deadline:
            assert r.status_code in (204, 404), r.text
            return
        time.sleep(0.5)


@contextmanager
def template(api: httpx.Client, name: str, image_ref: str, **fields: Any) -> Iterator[Json]:
    """POST /v1/templates; yields the 201 body; the template is deleted afterwards."""
    r = api.post("/v1/templates", json={"name": name, "imageRef": image_ref, **fields})
    assert r.status_code == 201, r.text
    created: Json = r.json()
    try:
        yield created
    finally:
        remove_template(api, created["id"])


@contextmanager
def built(api: httpx.Client, name: str, image_ref: str, **fields: Any) -> Iterator[Json]:
    """A template that finished building ready."""
    with template(api, name, image_ref, **fields) as created:
        done = wait_built(api, created["id"])
        assert_ready(api, done)
        yield done


def spawn(api: httpx.Client, template_id: str) -> Json:
    r = api.post("/v1/sandboxes?wait=true&waitTimeoutSec=60",
                 json={"templateId": template_id, "timeoutSeconds": 300})
    assert r.status_code == 201, r.text
    body: Json = r.json()
    return body


@contextmanager
def running_sandbox(api: httpx.Client, template_id: str) -> Iterator[Json]:
    sb = spawn(api, template_id)
    try:
        assert sb["status"] == "running", (sb, api.get(f"/v1/sandboxes/{sb['id']}/logs").json())
        yield sb
    finally:
        api.delete(f"/v1/sandboxes/{sb['id']}")


def sh(api: httpx.Client, sb: Json, script: str, **extra: Any) -> Json:
    r = api.post(f"/v1/sandboxes/{sb['id']}/exec", json={"cmd": "sh", "args": ["-c", script], **extra})
    assert r.status_code == 200, r.text
    out: Json = r.json()
    return out


def stdout_of(api: httpx.Client, sb: Json, script: str) -> str:
    out = sh(api, sb, script)
    assert out["exitCode"] == 0, out
    return str(out["stdout"])


def error_code(r: httpx.Response) -> str:
    return str(r.json()["error"]["code"])


# --- builds -----------------------------------------------------------------------------------


STEPS: list[Json] = [
    {"run": "echo built > /built.txt"},
    {"env": {"GREETING": "hi"}},
    {"workdir": "/srv/app"},
    {"copy": {"path": "/srv/app/hello.sh", "content": "echo hello", "mode": 0o755}},
    {"run": "id -u > /tmp/uid-at-build", "user": "user"},
]


def test_build_from_a_registry_ref_with_steps_then_spawn(api: httpx.Client, busybox_image: str) -> None:
    with template(api, "bb-steps", busybox_image, steps=STEPS) as created:
        assert created["id"] == "tpl_bb-steps"
        assert created["status"] == "building", created
        assert created["imageRef"] == busybox_image
        done = wait_built(api, created["id"])
        assert_ready(api, done)
        assert done["imageDigest"].startswith("sha256:") and len(done["imageDigest"]) == 71, done
        assert done["sizeBytes"] > 0, done
        assert done["buildError"] is None, done
        assert len(done["steps"]) == 5 and done["steps"][0]["run"] == STEPS[0]["run"], done["steps"]

        lines = build_log(api, created["id"]).splitlines()
        assert f"pulling docker://{busybox_image}" in lines, lines
        assert any(line.startswith("layer 1/") for line in lines), lines
        assert any(line.startswith("step 1/5") for line in lines), lines
        assert any(line.startswith("step 5/5") for line in lines), lines
        assert any(line.startswith("template ready: sha256:") for line in lines), lines

        with running_sandbox(api, created["id"]) as sb:
            assert stdout_of(api, sb, "cat /built.txt") == "built\n"
            assert stdout_of(api, sb, "echo $GREETING") == "hi\n"
            assert stdout_of(api, sb, "pwd") == "/srv/app\n"
            assert stdout_of(api, sb, "sh /srv/app/hello.sh") == "hello\n"
            assert stdout_of(api, sb, "cat /tmp/uid-at-build") == "1000\n"
            assert stdout_of(api, sb, "id -u; whoami") == "1000\nuser\n"
            assert stdout_of(api, sb, "stat -c '%a %u' /srv/app/hello.sh") == "755 0\n"


def test_a_second_template_from_the_same_image_reuses_its_layers(api: httpx.Client,
                                                                 busybox_image: str) -> None:
    with built(api, "bb-first", busybox_image), \
            built(api, "bb-second", busybox_image, steps=[{"run": "echo second"}]) as second:
        lines = build_log(api, second["id"]).splitlines()
        layer_lines = [line for line in lines if line.startswith("layer ")]
        assert len(layer_lines) == 2, lines
        assert all(line.endswith("already present") for line in layer_lines), lines
        assert not any(line.startswith("unpacking") for line in lines), lines
        assert any(line.endswith("is already unpacked") for line in lines), lines


def test_build_from_an_oci_archive_without_steps(api: httpx.Client, busybox_ref: str,
                                                 scratch: Path) -> None:
    archive = oci_archive(busybox_ref, scratch / "busybox.tar")
    with built(api, "bb-archive", archive) as done:
        assert done["imageRef"] == archive
        with running_sandbox(api, done["id"]) as sb:
            assert stdout_of(api, sb, "echo from-archive; id -u") == "from-archive\n1000\n"


def test_a_failing_step_fails_the_build_and_the_template_cannot_spawn(api: httpx.Client,
                                                                      busybox_image: str) -> None:
    steps = [{"run": "echo fine"}, {"run": "echo about to fail; exit 3"}]
    with template(api, "bb-fails", busybox_image, steps=steps) as created:
        done = wait_built(api, created["id"])
        assert done["status"] == "failed", done
        assert "step 2" in done["buildError"], done
        assert "3" in done["buildError"], done

        lines = build_log(api, created["id"]).splitlines()
        header = next(i for i, line in enumerate(lines) if line.startswith("step 2/2"))
        output = lines.index("about to fail")
        assert output > header, lines
        # The failing step's output closes the log, before the summary lines.
        assert output >= len(lines) - 3, lines
        assert lines[-1].startswith("build failed: step 2/2"), lines

        r = api.post("/v1/sandboxes?wait=true&waitTimeoutSec=30", json={"templateId": created["id"]})
        assert r.status_code == 409, r.text
        assert error_code(r) == "template_not_ready"


# --- startCmd / readyCmd ----------------------------------------------------------------------


def test_ready_cmd_gates_running_and_start_cmd_output_is_logged(api: httpx.Client,
                                                               busybox_image: str) -> None:
    start = "sh -c 'sleep 1; touch /tmp/ready; echo started-ok'"
    with built(api, "bb-ready", busybox_image, startCmd=start, readyCmd="test -f /tmp/ready") as done:
        assert done["startCmd"] == start and done["readyCmd"] == "test -f /tmp/ready", done
        with running_sandbox(api, done["id"]) as sb:
            # Running only once readyCmd passed: the file startCmd made is there.
            assert sh(api, sb, "test -f /tmp/ready")["exitCode"] == 0
            deadline = time.monotonic() + 10
            while True:
                logs = api.get(f"/v1/sandboxes/{sb['id']}/logs").json()
                if any(e["component"] == "start_cmd" and "started-ok" in e["message"] for e in logs):
                    break
                assert time.monotonic() < deadline, logs
                time.sleep(0.2)


def test_a_ready_cmd_that_never_passes_fails_the_sandbox(api: httpx.Client, busybox_image: str) -> None:
    with built(api, "bb-never", busybox_image, readyCmd="false", readyTimeoutS=2) as done:
        sb = spawn(api, done["id"])
        try:
            deadline = time.monotonic() + 30
            while sb["status"] not in ("failed", "killed", "terminated"):
                assert time.monotonic() < deadline, sb
                time.sleep(0.25)
                sb = api.get(f"/v1/sandboxes/{sb['id']}").json()
            assert sb["status"] == "failed", sb
            assert "readyCmd" in (sb["endReason"] or ""), sb
        finally:
            api.delete(f"/v1/sandboxes/{sb['id']}")


# --- build log streaming ----------------------------------------------------------------------


def test_build_log_follow_streams_lines_while_the_build_runs(api: httpx.Client,
                                                             busybox_image: str) -> None:
    steps = [{"run": "for i in 1 2 3; do echo tick $i; sleep 1; done"}]
    with template(api, "bb-follow", busybox_image, steps=steps) as created:
        url = f"/v1/templates/{created['id']}/build-log"
        received: list[tuple[float, str]] = []
        status_at_first_tick = ""
        started = time.monotonic()
        with api.stream("GET", url, params={"follow": "true"},
                           timeout=httpx.Timeout(10, read=30)) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/plain"), r.headers
            for line in r.iter_lines():
                received.append((time.monotonic() - started, line))
                if line == "tick 1":
                    status_at_first_tick = api.get(f"/v1/templates/{created['id']}").json()["status"]
                assert time.monotonic() - started < BUILD_TIMEOUT, received
        ended = time.monotonic() - started
        lines = [line for _, line in received]
        assert status_at_first_tick == "building", received
        assert ["tick 1", "tick 2", "tick 3"] == [line for line in lines if line.startswith("tick")]
        tick1 = next(t for t, line in received if line == "tick 1")
        tick3 = next(t for t, line in received if line == "tick 3")
        assert tick3 - tick1 > 1.5, received  # arrived as printed, not in one piece at the end
        assert any(line.startswith("template ready: ") for line in lines), received
        # The stream ended by itself once the build was over.
        assert wait_built(api, created["id"], timeout=10)["status"] == "ready"
        assert ended < BUILD_TIMEOUT


# --- conflicts and deletion -------------------------------------------------------------------


def test_duplicate_names_and_delete_while_in_use_conflict(api: httpx.Client, busybox_image: str) -> None:
    with built(api, "bb-busy", busybox_image) as done:
        r = api.post("/v1/templates", json={"name": "bb-busy", "imageRef": busybox_image})
        assert r.status_code == 409, r.text
        assert error_code(r) == "conflict"

        sb = spawn(api, done["id"])
        try:
            assert sb["status"] == "running", sb
            r = api.delete(f"/v1/templates/{done['id']}")
            assert r.status_code == 409, r.text
            assert error_code(r) == "conflict"
            assert r.json()["error"]["details"]["sandboxCount"] == 1, r.text
        finally:
            api.delete(f"/v1/sandboxes/{sb['id']}")
        r = api.delete(f"/v1/templates/{done['id']}")
        assert r.status_code == 204, r.text
        r = api.get(f"/v1/templates/{done['id']}")
        assert r.status_code == 404, r.text
        assert error_code(r) == "template_not_found"


def test_built_in_templates_cannot_be_deleted_and_survive_image_gc(
        api: httpx.Client, busybox_image: str, qbox: QboxUp) -> None:
    r = api.delete("/v1/templates/tpl_python")
    assert r.status_code == 409, r.text
    assert api.get("/v1/templates/tpl_python").json()["status"] == "ready"
    # Deleting the last template of an image collects the image on the host, in the background.
    with built(api, "bb-gc", busybox_image) as done:
        unpacked = qbox.data_dir / "images" / "rootfs" / done["imageDigest"].split(":")[1]
        assert unpacked.is_dir(), unpacked
    deadline = time.monotonic() + 60
    while unpacked.exists():
        assert time.monotonic() < deadline, f"{unpacked} still there 60 s after its template was deleted"
        time.sleep(0.2)
    with running_sandbox(api, "tpl_python") as sb:
        out = api.post(f"/v1/sandboxes/{sb['id']}/exec",
                          json={"cmd": "python3", "args": ["-c", "print(6*7)"]}).json()
        assert out["stdout"] == "42\n", out


# --- a hostile image --------------------------------------------------------------------------


def _host_state() -> dict[str, str]:
    return {path: hashlib.sha256(Path(path).read_bytes()).hexdigest()
            for path in ("/etc/passwd", "/etc/shadow", "/etc/group") if Path(path).exists()}


# All tricks in one layer (umoci refuses it: a hard link to a path the image lacks), and
# the tricks umoci lets through on top of busybox, so that the build step runs over them.
UNPACKABLE = ["dotdot", "absolute", "symlink-root", "symlink-etc", "devices", "fifo", "setuid", "canary"]


@pytest.mark.parametrize(("tricks", "outcome"), [(None, "failed"), (UNPACKABLE, "ready")],
                         ids=["all-tricks", "unpackable-on-busybox"])
def test_a_hostile_image_never_touches_the_host(api: httpx.Client, scratch: Path, qbox: QboxUp,
                                               tricks: list[str] | None, outcome: str) -> None:
    work = Path(tempfile.mkdtemp(prefix="hostile-", dir=scratch))
    canary = work / "canary"
    canary.mkdir()
    (canary / "canary.txt").write_text("original\n")
    before = _host_state()
    if tricks is None:
        ref = hostile_layout(work / "layout", canary)
        marker = hostile_marker(work / "layout")
    else:
        marker = uuid.uuid4().hex[:12]
        by_name = hostile_tricks(marker, canary)
        ref = write_layout(work / "layout", "hostile",
                           [*busybox_layers(), layer_tar([e for name in tricks for e in by_name[name]])])
    with template(api, f"hostile-{work.name[8:].lower()}", ref,
                  steps=[{"run": "echo survived"}]) as created:
        done = wait_built(api, created["id"])
        assert done["status"] == outcome, (done["status"], done.get("buildError"))
        assert (canary / "canary.txt").read_text() == "original\n"
        assert not (canary / "planted").exists()
        assert not Path(f"/abs-escape-{marker}").exists()
        assert not Path(f"/tmp/pwned-{marker}").exists()
        assert not Path("/etc/qbox-pwned").exists()
        assert _host_state() == before
        found = subprocess.run(["find", "/", "-xdev", "-maxdepth", "3", "-name", f"*{marker}*"],
                               capture_output=True, text=True, timeout=60).stdout.split()
        assert found == [], found
        # In qbox's own data dir, the entries may only have landed inside the unpacked image.
        data_dir = qbox.data_dir
        found = subprocess.run(["find", str(data_dir), "-name", f"*{marker}*"],
                               capture_output=True, text=True, timeout=60).stdout.split()
        assert [p for p in found if not _inside_a_rootfs(data_dir, Path(p))] == [], found
        if outcome == "ready":
            assert "survived" in build_log(api, created["id"]).splitlines()
            with running_sandbox(api, created["id"]) as sb:
                # Device nodes from an image are never kept.
                nodes = sh(api, sb, "for f in /dev-null /dev-loop /sub/kmem; do "
                                       "test -c $f || test -b $f && echo $f; done; true", user="root")
                assert nodes["stdout"] == "", nodes


def _inside_a_rootfs(data_dir: Path, path: Path) -> bool:
    """Somewhere in an unpacked image: ``images/rootfs/<64 hex>/rootfs/…``."""
    try:
        parts = path.relative_to(data_dir / "images" / "rootfs").parts
    except ValueError:
        return False
    return len(parts) > 2 and len(parts[0]) == 64 and parts[1] == "rootfs"


# --- QBOX_REGISTRY ----------------------------------------------------------------------------


def test_builds_are_pushed_to_the_configured_registry(api: httpx.Client, busybox_image: str,
                                                      registry: str) -> None:
    with built(api, "bb-pushed", busybox_image, steps=[{"run": "echo pushed > /pushed.txt"}]) as done:
        ref = done["registryRef"]
        prefix = f"docker://{registry}/qbox/templates/bb-pushed@sha256:"
        assert ref.startswith(prefix) and len(ref) == len(prefix) + 64, done
        found = inspect(ref)
        assert found.returncode == 0, found.stderr
        assert f'"Digest": "{ref.split("@", 1)[1]}"' in found.stdout, found.stdout
        lines = build_log(api, done["id"]).splitlines()
        pushed = [line for line in lines if line.startswith("pushed ")]
        assert pushed == [f"pushed {ref}"], lines
