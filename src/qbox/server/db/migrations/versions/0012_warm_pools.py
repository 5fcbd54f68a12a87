"""warm pools: templates' code interpreter and pool settings, pooled sandboxes, fromPool

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 14:00:00.000000
"""

from alembic import op
import sqlalchemy as sa

from qbox.server.db.tables import UtcDateTime


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('templates', schema=None) as batch_op:
        batch_op.add_column(sa.Column('code_interpreter', sa.String(length=8), server_default='lazy', nullable=False))
        batch_op.add_column(sa.Column('warm_pool_size', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('warm_pool_eager', sa.Boolean(), server_default=sa.true(), nullable=False))
    with op.batch_alter_table('sandboxes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('from_pool', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.create_table('warm_sandboxes',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('template_id', sa.String(length=80), nullable=False),
    sa.Column('host_id', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('build_generation', sa.Integer(), nullable=False),
    sa.Column('image_digest', sa.String(length=80), nullable=False),
    sa.Column('runtime', sa.String(length=16), nullable=False),
    sa.Column('vcpus', sa.Integer(), nullable=False),
    sa.Column('memory_mb', sa.Integer(), nullable=False),
    sa.Column('disk_size_mb', sa.Integer(), nullable=False),
    sa.Column('allow_internet_access', sa.Boolean(), nullable=False),
    sa.Column('created_at', UtcDateTime(timezone=True), nullable=False),
    sa.Column('ready_at', UtcDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['host_id'], ['hosts.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['template_id'], ['templates.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_warm_sandboxes_host_id', 'warm_sandboxes', ['host_id'], unique=False)
    op.create_index('ix_warm_sandboxes_template_status', 'warm_sandboxes', ['template_id', 'status'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_warm_sandboxes_template_status', table_name='warm_sandboxes')
    op.drop_index('ix_warm_sandboxes_host_id', table_name='warm_sandboxes')
    op.drop_table('warm_sandboxes')
    with op.batch_alter_table('sandboxes', schema=None) as batch_op:
        batch_op.drop_column('from_pool')
    with op.batch_alter_table('templates', schema=None) as batch_op:
        batch_op.drop_column('warm_pool_eager')
        batch_op.drop_column('warm_pool_size')
        batch_op.drop_column('code_interpreter')
