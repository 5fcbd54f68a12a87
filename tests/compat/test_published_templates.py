"""The published client (qbox-sh 1.4.1) creates, finds by name, uses and deletes a template
built from an image in a registry."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.conftest import run_published_cli, run_published_script
from tests.qbox_process import QboxUp
from tests.registry import BUSYBOX_REPO, registry_with_busybox

pytestmark = pytest.mark.compat

NAME = "compat-busybox"


@pytest.fixture(scope="module")
def busybox_in_registry() -> Iterator[str]:
    with registry_with_busybox() as address:
        yield f"{address}/{BUSYBOX_REPO}"


@pytest.fixture
def cleanup(qbox_for_compat: QboxUp) -> Iterator[None]:
    """Whatever the test left: the template's sandboxes, then the template."""
    yield
    with qbox_for_compat.client() as api:
        for sb in api.get("/v1/sandboxes", params={"templateId": f"tpl_{NAME}"}).json():
            api.delete(f"/v1/sandboxes/{sb['id']}")
        api.delete(f"/v1/templates/tpl_{NAME}")


SCRIPT = textwrap.dedent('''
    import json, sys
    from qbox import Sandbox

    sb = Sandbox.create(sys.argv[1], timeout=120)
    try:
        r = sb.commands.run("echo hi; id -u")
        out = {"id": sb.sandbox_id, "template": sb.get_info().template_id, "run": [r.exit_code, r.stdout]}
    finally:
        sb.kill()
    print(json.dumps(out))
''')


def test_published_cli_and_sdk_use_a_template_built_from_a_registry_image(
        published_python: Path, qbox_for_compat: QboxUp, busybox_in_registry: str, cleanup: None) -> None:
    up = qbox_for_compat
    created = run_published_cli(published_python, up, "-o", "json", "templates", "create", "--name", NAME,
                  "--image-ref", busybox_in_registry, "--wait", "--wait-timeout", "180")
    assert created.returncode == 0, created.stdout + created.stderr
    template = json.loads(created.stdout)
    assert template["name"] == NAME, template
    assert template["template_id"] == f"tpl_{NAME}", template
    assert template["status"] == "ready", template
    assert template["image_ref"] == busybox_in_registry, template
    assert template["image_digest"].startswith("sha256:"), template

    got = run_published_cli(published_python, up, "-o", "json", "templates", "get", NAME)
    assert got.returncode == 0, got.stdout + got.stderr
    assert json.loads(got.stdout)["template_id"] == f"tpl_{NAME}"

    out = run_published_script(published_python, up, SCRIPT, NAME)
    assert out["template"] == f"tpl_{NAME}", out
    assert out["run"] == [0, "hi\n1000\n"], out

    deleted = run_published_cli(published_python, up, "-y", "templates", "delete", NAME)
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    missing = run_published_cli(published_python, up, "-o", "json", "templates", "get", NAME)
    assert missing.returncode == 4, missing.stdout + missing.stderr
