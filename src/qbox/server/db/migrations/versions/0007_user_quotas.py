"""per-user quotas: defaults and overrides; the hosts' data disk for admission

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

_QUOTAS = ('sandboxes', 'vcpus', 'memory_mb', 'disk_mb', 'commands', 'shells')


def _quota_columns() -> list[sa.Column]:
    return [*(sa.Column(name, sa.Integer(), nullable=True) for name in _QUOTAS),
            sa.Column('updated_at', qbox.server.db.tables.UtcDateTime(timezone=True), nullable=False)]


def upgrade() -> None:
    op.create_table('quota_defaults',
    *_quota_columns(),
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('user_quotas',
    *_quota_columns(),
    sa.Column('user_id', sa.String(length=40), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id')
    )
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('disk_total_mb', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('disk_free_mb', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.drop_column('disk_free_mb')
        batch_op.drop_column('disk_total_mb')
    op.drop_table('user_quotas')
    op.drop_table('quota_defaults')
