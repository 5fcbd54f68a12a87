"""per-user quotas: defaults and overrides

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 00:00:00.000000
"""

from alembic import op
import sqlalchemy as sa
import qbox.server.db.tables


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
