"""Claiming rows, so that replicas sharing one database split work instead of doubling it.

A background loop that runs on every replica (the reaper, the host monitor) picks its rows
with ``claiming``: on PostgreSQL the rows are locked ``FOR NO KEY UPDATE SKIP LOCKED`` until
the claiming transaction ends, and a row another replica holds is skipped, not waited for.
``NO KEY`` leaves the rows' keys free, so inserts that reference a claimed row (a sandbox's
event, a host's sandbox) do not wait either. SQLite renders no lock clause: it has one writer
at a time, which already serialises the replicas' writes.

A claim protects only what its own transaction writes: do the claimed work in the session
that claimed (another session of the same replica that updates a claimed row would wait for
the claim forever), and keep each change conditional (``UPDATE … WHERE status = …``) as the
sandbox lifecycle does, since a row is claimable again as soon as its claim commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVarTuple

from sqlalchemy import Row, Select
from sqlalchemy.ext.asyncio import AsyncSession

Ts = TypeVarTuple("Ts")


def claiming(query: Select[*Ts]) -> Select[*Ts]:
    """``query``, locking the rows it returns for this transaction and skipping rows already locked."""
    return query.with_for_update(skip_locked=True, key_share=True)


async def claim(session: AsyncSession, query: Select[*Ts]) -> Sequence[Row[*Ts]]:
    """The rows of ``query`` no other transaction holds, now held by ``session`` until it ends."""
    return (await session.execute(claiming(query))).all()
