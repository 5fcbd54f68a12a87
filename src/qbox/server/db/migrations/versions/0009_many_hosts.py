"""many hosts: host figures, drain, joined agents' credentials, join tokens, cluster keys

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 08:00:00.000000
"""

from alembic import op
import sqlalchemy as sa
import qbox.server.db.tables


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('draining', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('kind', sa.String(length=16), server_default='embedded', nullable=False))
        batch_op.add_column(sa.Column('sandbox_disks_mb', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('cpu_percent', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('memory_used_mb', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('max_sandboxes', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('version', sa.String(length=64), server_default='', nullable=False))
        batch_op.add_column(sa.Column('runtimes', sa.JSON(), server_default='[]', nullable=False))
        batch_op.add_column(sa.Column('labels', sa.JSON(), server_default='{}', nullable=False))
        batch_op.add_column(sa.Column('images', sa.JSON(), server_default='[]', nullable=False))
        batch_op.add_column(sa.Column('credential_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('removed_at', qbox.server.db.tables.UtcDateTime(timezone=True),
                                      nullable=True))
        batch_op.create_unique_constraint('uq_hosts_credential_hash', ['credential_hash'])
    op.execute("UPDATE hosts SET status = 'ready' WHERE status = 'online'")
    op.create_table('join_tokens',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('secret_hash', sa.String(length=64), nullable=False),
    sa.Column('created_by', sa.String(length=40), nullable=True),
    sa.Column('created_at', qbox.server.db.tables.UtcDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', qbox.server.db.tables.UtcDateTime(timezone=True), nullable=False),
    sa.Column('labels', sa.JSON(), nullable=False),
    sa.Column('used_at', qbox.server.db.tables.UtcDateTime(timezone=True), nullable=True),
    sa.Column('host_id', sa.String(length=64), nullable=True),
    sa.Column('revoked_at', qbox.server.db.tables.UtcDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('secret_hash')
    )
    op.create_table('cluster_keys',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.Column('created_at', qbox.server.db.tables.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_index('ix_sandboxes_host_status', 'sandboxes', ['host_id', 'status'])


def downgrade() -> None:
    op.drop_index('ix_sandboxes_host_status', table_name='sandboxes')
    op.drop_table('cluster_keys')
    op.drop_table('join_tokens')
    op.execute("UPDATE hosts SET status = 'online' WHERE status = 'ready'")
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.drop_constraint('uq_hosts_credential_hash', type_='unique')
        for name in ('removed_at', 'credential_hash', 'images', 'labels', 'runtimes', 'version',
                     'max_sandboxes', 'memory_used_mb', 'cpu_percent', 'sandbox_disks_mb', 'kind',
                     'draining'):
            batch_op.drop_column(name)
