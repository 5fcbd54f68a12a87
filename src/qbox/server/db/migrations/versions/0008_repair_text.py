"""repair stored text: lone surrogates and NULs that make rows unreadable

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 00:00:00.000000
"""

from alembic import op
import sqlalchemy as sa
import qbox.server.db.tables


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
