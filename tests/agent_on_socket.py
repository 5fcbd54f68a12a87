"""An agent app served by uvicorn on a unix socket inside the test's event loop, so the
control plane's real ``AgentClient`` reaches it over the real wire (streamed answers and
WebSockets included, which ``httpx.ASGITransport`` would buffer or cannot carry)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI


@asynccontextmanager
async def served(app: FastAPI, socket_path: Path) -> AsyncIterator[Path]:
    """Serve ``app`` (its lifespan already entered by the caller) at ``socket_path``."""
    config = uvicorn.Config(app, uds=str(socket_path), lifespan="off", log_level="warning",
                            access_log=False, timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn ended before it started")
            await asyncio.sleep(0.01)
        yield socket_path
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
