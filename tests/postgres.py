"""A throw-away PostgreSQL cluster for tests: ``initdb`` and ``pg_ctl`` in a temporary directory.

One cluster serves a whole pytest run: it listens on its own free port on 127.0.0.1 (its unix
socket stays in its directory), needs no systemd and no running service, and is stopped
(``-m immediate``) and removed when the run ends, even after failures or an interrupt. Each
test gets a fresh database, copied from one already migrated (``CREATE DATABASE … TEMPLATE``
is far quicker than running the migrations); two threads make the next ones and drop used
ones while tests run, so a test seldom waits for either. initdb refuses root, so as root the
cluster runs as ``nobody``. A run killed before it could clean up (SIGKILL, SIGTERM) leaves
its cluster behind; the next run stops and removes it (each directory names its test run).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import queue
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg

from qbox.server.db.engine import migrate

TEMPLATE_DB = "qbox_migrated"
# Fresh databases made ahead of the tests that will take them.
_AHEAD = 2
_PREFIX = "qbox-pg-"
# In each cluster's directory: the pid of the test run that owns it.
_OWNER = "owner.pid"
# Durability is worthless for a database thrown away after the run; without it a test's
# commits do not wait for the disk.
_FAST = ("fsync=off", "synchronous_commit=off", "full_page_writes=off", "max_connections=300")


def postgres_bin() -> Path | None:
    """Debian's server binaries (``make setup`` installs them), newest version first."""
    root = Path("/usr/lib/postgresql")
    versions = sorted((p for p in root.glob("*/bin") if (p / "initdb").exists()),
                      key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    return versions[0] if versions else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """One running PostgreSQL server and the databases tests made on it."""

    def __init__(self, bin_dir: Path, root: Path | None = None) -> None:
        self.bin_dir = bin_dir
        self.root = root or Path(tempfile.mkdtemp(prefix=_PREFIX))
        self.data = self.root / "data"
        self.port = 0
        self._user = "nobody" if os.geteuid() == 0 else None
        self._names = itertools.count(1)
        self._ready: queue.Queue[str] = queue.Queue(_AHEAD)
        self._used: queue.Queue[str | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._failure: psycopg.Error | None = None
        self._started = False

    def _run(self, *args: str) -> None:
        subprocess.run([str(self.bin_dir / args[0]), *args[1:]], check=True, user=self._user,
                       cwd=self.root, stdin=subprocess.DEVNULL, capture_output=True, timeout=120,
                       env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"})

    def start(self) -> None:
        (self.root / _OWNER).write_text(str(os.getpid()))
        if self._user is not None:
            shutil.chown(self.root, user=self._user)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--encoding=UTF8", "--locale=C", "--no-sync")
        self.port = _free_port()
        settings = ["listen_addresses='127.0.0.1'", f"port={self.port}",
                    f"unix_socket_directories='{self.root}'", *_FAST]
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n".join(settings) + "\n")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "start")
        self._started = True
        with self._connect() as admin:
            admin.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
        migrate(self.url(TEMPLATE_DB))
        self._threads = [threading.Thread(target=target, name=f"postgres {target.__name__}", daemon=True)
                         for target in (self._make_ahead, self._drop_used)]
        for thread in self._threads:
            thread.start()

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url("postgres"), autocommit=True)

    def _make_ahead(self) -> None:
        try:
            with self._connect() as admin:
                while not self._stopping.is_set():
                    name = f"test_{next(self._names)}"
                    # FILE_COPY: a small template is copied faster than through the WAL.
                    admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DB}" STRATEGY FILE_COPY')
                    while not self._stopping.is_set():
                        with contextlib.suppress(queue.Full):
                            self._ready.put(name, timeout=0.2)
                            break
        except psycopg.Error as exc:
            self._failure = exc

    def _drop_used(self) -> None:
        with self._connect() as admin:
            while (name := self._used.get()) is not None and not self._stopping.is_set():
                # FORCE: whatever a test left connected goes with it.
                admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """A fresh, migrated database's URL; dropped afterwards with whatever still uses it."""
        if self._failure is not None:
            raise RuntimeError(f"the test cluster makes no more databases: {self._failure}")
        name = self._ready.get(timeout=120)
        try:
            yield self.url(name)
        finally:
            self._used.put(name)

    def stop(self) -> None:
        """Stop the server at once and remove its directory; safe to call twice."""
        self._stopping.set()
        self._used.put(None)
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads = []
        if self._started:
            self._started = False
            with contextlib.suppress(subprocess.SubprocessError):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphans(bin_dir: Path) -> None:
    """Stop and remove the clusters of test runs that died without doing it."""
    for root in Path(tempfile.gettempdir()).glob(f"{_PREFIX}*"):
        try:
            owner = int((root / _OWNER).read_text())
        except (OSError, ValueError):
            continue
        if not _alive(owner):
            orphan = Cluster(bin_dir, root)
            orphan._started = (root / "data" / "postmaster.pid").exists()
            orphan.stop()


@contextlib.contextmanager
def running_cluster() -> Iterator[Cluster]:
    """A started cluster, stopped and removed on leaving, or at exit if the process is torn down."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL's server is not installed: run `make setup`")
    remove_orphans(bin_dir)
    cluster = Cluster(bin_dir)
    atexit.register(cluster.stop)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        atexit.unregister(cluster.stop)
