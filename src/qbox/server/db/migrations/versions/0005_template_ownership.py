"""templates: owner and visibility

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 00:00:00.000000

Existing templates: built-ins become public (owned by nobody). Every other
template goes to the user the audit log names as its creator (the last
successful ``template.create`` for it); one with no such entry goes to the
first admin. All of them start private: an admin makes one public again.
"""

from alembic import op
import sqlalchemy as sa
import qbox.server.db.tables


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('templates', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner_id', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('public', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.create_index(batch_op.f('ix_templates_owner_id'), ['owner_id'], unique=False)
        batch_op.create_foreign_key('fk_templates_owner_id_users', 'users', ['owner_id'], ['id'])

    conn = op.get_bind()
    conn.execute(sa.text("UPDATE templates SET public = :yes WHERE builtin = :yes"), {"yes": True})
    creators = conn.execute(sa.text(
        "SELECT a.target_id, a.actor_id FROM audit_log a JOIN users u ON u.id = a.actor_id "
        "WHERE a.action = 'template.create' AND a.outcome < 300 AND a.target_id IS NOT NULL "
        "ORDER BY a.id")).all()
    for template_id, user_id in creators:  # later entries win: the template as it is now
        conn.execute(sa.text("UPDATE templates SET owner_id = :user WHERE id = :id AND builtin = :no"),
                     {"user": user_id, "id": template_id, "no": False})
    first_admin = conn.execute(sa.text(
        "SELECT id FROM users WHERE role = 'admin' ORDER BY created_at, id LIMIT 1")).scalar()
    if first_admin is not None:
        conn.execute(sa.text("UPDATE templates SET owner_id = :user "
                             "WHERE owner_id IS NULL AND builtin = :no"),
                     {"user": first_admin, "no": False})


def downgrade() -> None:
    with op.batch_alter_table('templates', schema=None) as batch_op:
        batch_op.drop_constraint('fk_templates_owner_id_users', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_templates_owner_id'))
        batch_op.drop_column('public')
        batch_op.drop_column('owner_id')
