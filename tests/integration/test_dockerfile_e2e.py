"""Templates from a Dockerfile, end to end: a real `qbox up`, buildah, skopeo, crun, a registry.

The Dockerfiles build FROM the busybox test image in the session registry (on
127.0.0.1, which a build's network namespace cannot reach: the agent pulls it
from the host and buildah never pulls). Each test deletes what it made, also
when it fails.
"""

from __future__ import annotations

import io
import socket
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from qbox.sdk import ConnectionConfig, Template
from tests.integration.test_templates_e2e import (
    build_log,
    remove_template,
    running_sandbox,
    stdout_of,
    wait_built,
)
from tests.qbox_process import QboxUp
from tests.registry import BUSYBOX_REPO

pytestmark = pytest.mark.integration

Json = dict[str, object]

MULTI_STAGE = """\
ARG BASE=nothing-here
FROM ${BASE} AS builder
ARG GREETING=hello
RUN echo "$GREETING from the builder" > /greeting.txt && id -u > /builder-uid.txt

FROM $BASE
COPY app/ /srv/app/
COPY --from=builder /greeting.txt /builder-uid.txt /srv/app/
ENV APP_MODE=production \\
    APP_NAME=demo
WORKDIR /srv/app
RUN echo "app:x:4242:4242:app:/srv/app:/bin/sh" >> /etc/passwd \\
 && echo "app:x:4242:" >> /etc/group \\
 && chown -R 4242:4242 /srv/app \\
 && echo "built in $(pwd) as $(id -u)" > /srv/app/built.txt
USER app
"""


def context_tar(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def upload(api: httpx.Client, data: bytes) -> httpx.Response:
    return api.post("/v1/build-contexts", content=data, headers={"Content-Type": "application/gzip"})


@contextmanager
def dockerfile_template(api: httpx.Client, name: str, dockerfile: str, **fields: object) -> Iterator[Json]:
    r = api.post("/v1/templates", json={"name": name, "dockerfile": dockerfile, **fields})
    assert r.status_code == 201, r.text
    created: Json = r.json()
    try:
        yield created
    finally:
        remove_template(api, str(created["id"]))


@pytest.fixture(scope="module")
def base(registry: str) -> str:
    return f"{registry}/{BUSYBOX_REPO}"


def test_a_multi_stage_dockerfile_builds_and_its_sandbox_shows_it(api: httpx.Client, base: str) -> None:
    r = upload(api, context_tar({"app/hello.txt": b"hello from the context\n"}))
    assert r.status_code == 201, r.text
    context = r.json()
    with dockerfile_template(api, "df-multi", MULTI_STAGE, buildContextId=context["id"],
                             buildArgs={"BASE": base, "GREETING": "howdy"}) as created:
        assert created["source"] == "dockerfile" and created["imageRef"] == ""
        done = wait_built(api, str(created["id"]), timeout=300)
        log = build_log(api, str(created["id"]))
        assert done["status"] == "ready", (done, log)
        assert "building a Dockerfile" in log and "STEP" in log, log
        assert "template ready: sha256:" in log, log
        assert done["user"] == "app" and done["workdir"] == "/srv/app", done
        with running_sandbox(api, str(created["id"])) as sb:
            out = stdout_of(api, sb, "cat hello.txt greeting.txt builder-uid.txt built.txt; "
                                     "echo $APP_MODE $APP_NAME; pwd; id -u; whoami")
            assert out.splitlines() == [
                "hello from the context", "howdy from the builder", "0",
                "built in /srv/app as 0", "production demo", "/srv/app", "4242", "app"], out
        # A rebuild builds the stored Dockerfile and context again.
        r = api.post(f"/v1/templates/{created['id']}/rebuild")
        assert r.status_code == 202, r.text
        again = wait_built(api, str(created["id"]), timeout=300)
        assert again["status"] == "ready", (again, build_log(api, str(created["id"])))
        assert "(build 2)" in build_log(api, str(created["id"]))


def test_the_sdk_uploads_a_context_without_what_dockerignore_names(
        api: httpx.Client, qbox: QboxUp, base: str, tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.sh").write_text("echo main\n")
    (tmp_path / "secret.key").write_text("not for the image\n")
    (tmp_path / ".dockerignore").write_text("*.key\n")
    (tmp_path / "Dockerfile").write_text(
        f"FROM {base}\nCOPY . /ctx/\nRUN test -f /ctx/app/main.sh && test ! -e /ctx/secret.key && echo CONTEXT-OK\n")
    config = ConnectionConfig(api_key=qbox.api_key, base_url=qbox.base_url)
    lines: list[str] = []
    try:
        info = Template.from_dockerfile("df-sdk", context=tmp_path, wait=True, on_log=lines.append,
                                        timeout=300, config=config)
        assert info.is_ready and info.source == "dockerfile", info
        assert "CONTEXT-OK" in lines, lines
    finally:
        remove_template(api, "tpl_df-sdk")


def test_a_failing_run_fails_the_template_and_the_log_says_why(api: httpx.Client, base: str) -> None:
    dockerfile = f"FROM {base}\nRUN echo about to fail && exit 3\n"
    with dockerfile_template(api, "df-fails", dockerfile) as created:
        done = wait_built(api, str(created["id"]), timeout=300)
        log = build_log(api, str(created["id"]))
        assert done["status"] == "failed", (done, log)
        assert "about to fail" in log, log
        assert "exit status 3" in str(done["buildError"]), done


@contextmanager
def listener() -> Iterator[tuple[int, list[str]]]:
    """A TCP server on every host address: (its port, the peers that reached it)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", 0))
    server.listen(16)
    server.settimeout(0.2)
    reached: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, peer = server.accept()
            except OSError:
                continue
            reached.append(peer[0])
            conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nREACHED\n")
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], reached
    finally:
        stop.set()
        thread.join(5)
        server.close()


def host_addresses() -> list[str]:
    """The host's own IPv4 addresses (loopback's too)."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True).stdout
    return sorted({line.split()[3].partition("/")[0] for line in out.splitlines() if len(line.split()) > 3})


def test_a_run_step_cannot_reach_the_host(api: httpx.Client, qbox: QboxUp, base: str) -> None:
    with listener() as (port, reached):
        targets = [f"{address}:{port}" for address in host_addresses()]
        targets.append(f"127.0.0.1:{qbox.port}")
        # The namespace's gateway is the host's end of its link.
        # busybox nc: connected (our listener answers and closes) is exit 0. The control: a
        # listener inside the build's own namespace is reached, so "blocked" means blocked.
        script = ("busybox nc -l -p 9999 </dev/null >/dev/null 2>&1 & sleep 1; "
                  "if busybox nc -w 3 127.0.0.1 9999 </dev/null >/dev/null 2>&1; then echo CONTROL-$((6*7)); fi; "
                  "gw=$(busybox ip route | busybox awk '/^default/ {print $3}'); "
                  f"for t in $gw:{port} $gw:{qbox.port} {' '.join(targets)}; do "
                  "if busybox nc -w 3 ${t%:*} ${t#*:} </dev/null >/dev/null 2>&1; then echo REACHED $t; "
                  "else echo BLOCKED $t; fi; done; echo gateway=$gw")
        dockerfile = f"FROM {base}\nRUN {script}\n"
        with dockerfile_template(api, "df-net", dockerfile) as created:
            done = wait_built(api, str(created["id"]), timeout=300)
            log = build_log(api, str(created["id"]))
            assert done["status"] == "ready", (done, log)
            lines = log.splitlines()
            assert "CONTROL-42" in lines, log
            assert any(line.startswith("gateway=") and line != "gateway=" for line in lines), log
            assert not [line for line in lines if line.startswith("REACHED")], log
            assert len([line for line in lines if line.startswith("BLOCKED ")]) == len(targets) + 2, log
        assert reached == [], reached


def test_a_bad_context_is_400_before_any_build(api: httpx.Client) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("/etc/cron.d/evil")
        data = b"* * * * * root touch /pwned\n"
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    r = upload(api, out.getvalue())
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "validation_error"
    assert "absolute" in r.json()["error"]["message"]
