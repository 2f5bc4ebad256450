"""replication: a rule's own retention of copies on its replica, and the removal time of a copy

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 12:20:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('replication_rules') as batch:
        batch.add_column(sa.Column('max_backups', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('retention_duration_days', sa.Integer(), nullable=True))
    with op.batch_alter_table('backup_copies') as batch:
        batch.add_column(sa.Column('deleted_at', sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('backup_copies') as batch:
        batch.drop_column('deleted_at')
    with op.batch_alter_table('replication_rules') as batch:
        batch.drop_column('retention_duration_days')
        batch.drop_column('max_backups')
