"""a placement lock row per host, apart from the host's row that heartbeats write

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 08:30:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('host_placements',
    sa.Column('host_id', sa.String(length=64), nullable=False),
    sa.Column('placed', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['host_id'], ['hosts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('host_id')
    )
    op.execute("INSERT INTO host_placements (host_id, placed) SELECT id, 0 FROM hosts")


def downgrade() -> None:
    op.drop_table('host_placements')
