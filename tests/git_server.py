"""Git repositories served over smart HTTP on loopback (``git http-backend`` behind a small
CGI bridge), for the from-git tests: no network, real git on both ends.

``GitServer(root)`` serves every bare repository under ``root`` at
``http://127.0.0.1:{port}/{name}``, plus a few paths that misbehave on purpose:
``/private/…`` answers 401 (a repository that needs credentials), ``/broken/…`` 500,
``/slow/…`` nothing for a long while, ``/moved/…`` a redirect to the same repository.
``make_repo`` writes a repository from a dict of files and returns its commits.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

GIT_ENV = {
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    "HOME": "/nonexistent",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_AUTHOR_NAME": "qbox tests",
    "GIT_AUTHOR_EMAIL": "tests@example.com",
    "GIT_COMMITTER_NAME": "qbox tests",
    "GIT_COMMITTER_EMAIL": "tests@example.com",
    "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
}
SLOW_SECONDS = 30.0


def git(cwd: Path, *args: str, stdin: bytes | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, input=stdin, capture_output=True,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.decode(errors='replace')}")
    return done.stdout.decode().strip()


def commit_files(work: Path, files: Mapping[str, str | tuple[str, str]], message: str) -> str:
    """Replace the work tree's files with ``files`` (a value ("link", target) is a symbolic
    link) and commit; the commit's name."""
    for child in work.iterdir():
        if child.name != ".git":
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    for name, content in files.items():
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, tuple):
            path.symlink_to(content[1])
        else:
            path.write_text(content)
    git(work, "add", "-A")
    git(work, "commit", "-q", "--allow-empty", "-m", message)
    return git(work, "rev-parse", "HEAD")


def make_repo(root: Path, name: str, history: list[Mapping[str, str | tuple[str, str]]],
              *, tags: Mapping[str, int] | None = None) -> list[str]:
    """A bare repository ``root/name`` whose branch ``main`` has one commit per entry of
    ``history`` (each the whole tree); ``tags`` names annotated tags by commit index."""
    work = root / f".work-{name}"
    work.mkdir(parents=True)
    git(work, "init", "-q", "-b", "main")
    commits = [commit_files(work, files, f"commit {i}") for i, files in enumerate(history)]
    for tag, index in (tags or {}).items():
        git(work, "tag", "-a", "-m", tag, tag, commits[index])
    bare = root / name
    git(root, "clone", "-q", "--bare", str(work), str(bare))
    shutil.rmtree(work)
    return commits


class GitServer:
    """``git http-backend`` for every repository under ``root``, on 127.0.0.1."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                server.requests.append(f"{self.command} {self.path}")

            def do_GET(self) -> None:
                self._serve()

            def do_POST(self) -> None:
                self._serve()

            def _serve(self) -> None:
                path, _, query = self.path.partition("?")
                if path.startswith("/private/"):
                    self._answer(401, b"credentials needed\n",
                                 [("WWW-Authenticate", 'Basic realm="git"')])
                    return
                if path.startswith("/broken/"):
                    self._answer(500, b"broken on purpose\n")
                    return
                if path.startswith("/slow/"):
                    time.sleep(SLOW_SECONDS)
                    self._answer(503, b"too late\n")
                    return
                if path.startswith("/moved/"):
                    target = f"http://localhost:{server.port}/{self.path[len('/moved/'):]}"
                    self._answer(301, b"", [("Location", target)])
                    return
                body = self._body()
                env = {
                    **GIT_ENV,
                    "GIT_PROJECT_ROOT": str(server.root),
                    "GIT_HTTP_EXPORT_ALL": "1",
                    "PATH_INFO": path,
                    "QUERY_STRING": query,
                    "REQUEST_METHOD": self.command,
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "CONTENT_LENGTH": str(len(body)),
                    "REMOTE_ADDR": self.client_address[0],
                    "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                    "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                }
                done = subprocess.run(["git", "http-backend"], input=body, env=env,
                                      capture_output=True, check=False)
                head, _, payload = done.stdout.partition(b"\r\n\r\n")
                if not _:
                    head, _, payload = done.stdout.partition(b"\n\n")
                status = 200
                headers: list[tuple[str, str]] = []
                for line in head.decode("latin-1").splitlines():
                    key, _, value = line.partition(":")
                    if key.lower() == "status":
                        status = int(value.split()[0])
                    elif key:
                        headers.append((key, value.strip()))
                self._answer(status, payload, headers)

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = bytearray()
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            return bytes(chunks)
                        chunks += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _answer(self, status: int, payload: bytes,
                        headers: list[tuple[str, str]] | None = None) -> None:
                self.send_response(status)
                for key, value in headers or []:
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="git-server",
                                        daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def __enter__(self) -> GitServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
