"""repair stored text: lone surrogates and NULs that make rows unreadable

Before the input edge refused them, a ``\\ud800`` escape could be stored in a
JSON column (SQLite keeps it escaped; reading it back gave a string that
cannot be sent as UTF-8, so listing a user's sandboxes failed for good), and
NULs could reach text and JSON columns. Each such character becomes U+FFFD.
The audit log is left alone: its rows are hash-chained (the audit service
stores entries sanitised itself).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 00:00:00.000000
"""

import json
import re
from typing import Any

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

_BAD = re.compile('[\x00\ud800-\udfff]')
# table -> (primary key, JSON columns, text columns)
_COLUMNS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    'sandboxes': ('id', ('labels', 'envs'), ('end_reason',)),
    'templates': ('id', ('envs', 'tags', 'services', 'steps'),
                  ('image_ref', 'build_error', 'start_cmd', 'ready_cmd', 'workdir')),
    'api_keys': ('id', ('scopes',), ('name',)),
    'sandbox_events': ('id', (), ('message',)),
    'template_build_logs': ('id', (), ('line',)),
}
# Large tables: on SQLite only rows holding a NUL byte are read (PostgreSQL text holds neither).
_TEXT_ONLY = {'sandbox_events', 'template_build_logs'}


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _BAD.sub('\ufffd', value)
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(item) for item in value]
    return value


def _stored_json(raw: Any) -> Any:
    return json.loads(raw) if isinstance(raw, str | bytes) else raw


def _repair(table_name: str, key: str, json_columns: tuple[str, ...], text_columns: tuple[str, ...]) -> None:
    bind = op.get_bind()
    if table_name in _TEXT_ONLY and bind.dialect.name != 'sqlite':
        return
    # Read as text, whatever the column's type, to see what is stored (no deserializer in between).
    raw = sa.table(table_name, sa.column(key), *(sa.column(c, sa.Text) for c in (*json_columns, *text_columns)))
    query = sa.select(*raw.c)
    if table_name in _TEXT_ONLY:
        query = query.where(sa.or_(*(sa.func.instr(sa.cast(raw.c[c], sa.LargeBinary), b'\x00') > 0
                                     for c in text_columns)))
    typed = sa.table(table_name, sa.column(key), *(sa.column(c, sa.JSON) for c in json_columns),
                     *(sa.column(c, sa.Text) for c in text_columns))
    for row in bind.execute(query).mappings().all():
        changes: dict[str, Any] = {}
        for column in json_columns:
            if row[column] is None:
                continue
            value = _stored_json(row[column])
            fixed = _scrub(value)
            if fixed != value:
                changes[column] = fixed
        for column in text_columns:
            if isinstance(row[column], str) and _BAD.search(row[column]):
                changes[column] = _scrub(row[column])
        if changes:
            bind.execute(sa.update(typed).where(typed.c[key] == row[key]).values(**changes))


def upgrade() -> None:
    for table_name, (key, json_columns, text_columns) in _COLUMNS.items():
        _repair(table_name, key, json_columns, text_columns)


def downgrade() -> None:
    pass  # the replaced characters were never text; nothing to restore
