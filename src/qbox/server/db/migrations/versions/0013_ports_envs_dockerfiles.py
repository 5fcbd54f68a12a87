"""ports, envs and Dockerfile templates: sandbox_ports, secret env keys, template sources, build contexts

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 17:30:00.000000
"""

from alembic import op
import sqlalchemy as sa

from qbox.server.db.tables import UtcDateTime


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('sandboxes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('env_secrets', sa.JSON(), server_default='[]', nullable=False))
    with op.batch_alter_table('templates', schema=None) as batch_op:
        batch_op.add_column(sa.Column('source', sa.String(length=16), server_default='image', nullable=False))
        batch_op.add_column(sa.Column('dockerfile', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('build_args', sa.JSON(), server_default='{}', nullable=False))
        batch_op.add_column(sa.Column('build_context_id', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('git_url', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('git_ref', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('resolved_commit_sha', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('dockerfile_path', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('context_path', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('build_key', sa.String(length=80), nullable=True))
        batch_op.add_column(sa.Column('built_from_template_id', sa.String(length=80), nullable=True))
        batch_op.create_index('ix_templates_build_key', ['build_key'], unique=False)
    op.create_table('sandbox_ports',
    sa.Column('sandbox_id', sa.String(length=64), nullable=False),
    sa.Column('port', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('visibility', sa.String(length=16), nullable=False),
    sa.Column('host_header_mode', sa.String(length=16), nullable=False),
    sa.Column('allowed_users', sa.JSON(), nullable=False),
    sa.Column('signing_key', sa.String(length=64), nullable=False),
    sa.Column('signed_url_expires_at', UtcDateTime(timezone=True), nullable=True),
    sa.Column('signed_url_ttl_seconds', sa.Integer(), nullable=True),
    sa.Column('created_at', UtcDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['sandbox_id'], ['sandboxes.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('sandbox_id', 'port')
    )
    op.create_table('build_contexts',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('owner_id', sa.String(length=40), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_build_contexts_owner_id', 'build_contexts', ['owner_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_build_contexts_owner_id', table_name='build_contexts')
    op.drop_table('build_contexts')
    op.drop_table('sandbox_ports')
    with op.batch_alter_table('templates', schema=None) as batch_op:
        batch_op.drop_index('ix_templates_build_key')
        for column in ('built_from_template_id', 'build_key', 'context_path', 'dockerfile_path',
                       'resolved_commit_sha', 'git_ref', 'git_url', 'build_context_id', 'build_args',
                       'dockerfile', 'source'):
            batch_op.drop_column(column)
    with op.batch_alter_table('sandboxes', schema=None) as batch_op:
        batch_op.drop_column('env_secrets')
