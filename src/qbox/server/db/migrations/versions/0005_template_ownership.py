"""templates: owner and visibility

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 00:00:00.000000
"""

from alembic import op
import sqlalchemy as sa
import qbox.server.db.tables


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
