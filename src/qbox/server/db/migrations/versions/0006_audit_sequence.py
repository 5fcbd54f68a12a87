"""audit: gap-free sequence, entries written with their change (no schema change)

Entry ids already are the gap-free sequence (a rolled-back transaction takes its
ids with it), and the entry now commits in its change's own transaction; the
tables stay as they are. Old rows need no repair: the old writer could not store
a lone surrogate (hashing it failed first), and rows with NULs still verify.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 00:00:00.000000
"""


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing to change (see above)."""


def downgrade() -> None:
    pass
