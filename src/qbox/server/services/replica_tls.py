"""Which certificate a replica's HTTPS listener serves (``QBOX_TLS``, ``QBOX_TLS_CERT``).

uvicorn loads its certificate before the app's lifespan runs, so with ``QBOX_TLS=auto``
the replica reaches the database first (migrating it, making the cluster CA if this is
the first start) and writes a fresh key and a certificate the CA signs to DATA_DIR/tls/,
with the CA's certificate beside them for operators to hand to hosts (``ca.crt``).
"""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from qbox.server.db.engine import make_async_engine, make_sessionmaker, migrate
from qbox.server.services.cluster_ca import issue_server_cert, parse_names, stored_ca
from qbox.server.settings import ServerSettings

TLS_DIR = "tls"


@dataclass(frozen=True)
class ListenerTls:
    certfile: Path
    keyfile: Path


def tls_names(settings: ServerSettings) -> list[str]:
    """``QBOX_TLS_NAMES`` (comma-separated), else this machine's hostname, localhost and 127.0.0.1."""
    listed = [name.strip() for name in (settings.tls_names or "").split(",") if name.strip()]
    return listed or [socket.gethostname(), "localhost", "127.0.0.1"]


def _write(path: Path, content: str, mode: int) -> None:
    # Written aside and renamed: a reader never sees half a key, and a key is never
    # readable by others, not even for a moment.
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


async def listener_tls(settings: ServerSettings) -> ListenerTls | None:
    """The files uvicorn serves HTTPS with; None: plain HTTP (``QBOX_TLS=off``, no own cert).
    ValueError for settings that do not fit together or a name that cannot be in a certificate."""
    if settings.tls_cert or settings.tls_key:
        if not (settings.tls_cert and settings.tls_key):
            raise ValueError("QBOX_TLS_CERT and QBOX_TLS_KEY are set together (a certificate and its key)")
        return ListenerTls(settings.tls_cert, settings.tls_key)
    if settings.tls == "off":
        return None
    names = tls_names(settings)
    parse_names(names)  # a bad name is refused before anything is written
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url()
    await asyncio.to_thread(migrate, url)
    engine = make_async_engine(url)
    try:
        ca = await stored_ca(make_sessionmaker(engine))
    finally:
        await engine.dispose()
    key_pem, cert_pem = issue_server_cert(ca, names)
    directory = settings.data_dir / TLS_DIR
    directory.mkdir(mode=0o700, exist_ok=True)
    files = ListenerTls(certfile=directory / "server.crt", keyfile=directory / "server.key")
    _write(files.keyfile, key_pem, 0o600)
    _write(files.certfile, cert_pem, 0o644)
    _write(directory / "ca.crt", ca.cert_pem, 0o644)
    return files
