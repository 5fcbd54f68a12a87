"""template builds: steps, start/ready commands, registry, build log

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 00:00:00.000000
"""

from alembic import op
import sqlalchemy as sa
import qbox.server.db.tables


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('templates', schema=None) as batch_op:
        batch_op.add_column(sa.Column('steps', sa.JSON(), server_default='[]', nullable=False))
        batch_op.add_column(sa.Column('start_cmd', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('ready_cmd', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('ready_timeout_s', sa.Integer(), server_default='30', nullable=False))
        batch_op.add_column(sa.Column('default_user', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('workdir', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('registry_ref', sa.Text(), server_default='', nullable=False))
        batch_op.add_column(sa.Column('base_digest', sa.String(length=80), server_default='', nullable=False))
        batch_op.add_column(sa.Column('build_generation', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('build_started_at', qbox.server.db.tables.UtcDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('build_finished_at', qbox.server.db.tables.UtcDateTime(timezone=True), nullable=True))

    op.create_table('template_build_logs',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('template_id', sa.String(length=80), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('time', qbox.server.db.tables.UtcDateTime(timezone=True), nullable=False),
    sa.Column('line', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['template_id'], ['templates.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('template_build_logs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_template_build_logs_template_id'), ['template_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('template_build_logs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_template_build_logs_template_id'))

    op.drop_table('template_build_logs')
    with op.batch_alter_table('templates', schema=None) as batch_op:
        batch_op.drop_column('build_finished_at')
        batch_op.drop_column('build_started_at')
        batch_op.drop_column('build_generation')
        batch_op.drop_column('base_digest')
        batch_op.drop_column('registry_ref')
        batch_op.drop_column('workdir')
        batch_op.drop_column('default_user')
        batch_op.drop_column('ready_timeout_s')
        batch_op.drop_column('ready_cmd')
        batch_op.drop_column('start_cmd')
        batch_op.drop_column('steps')
