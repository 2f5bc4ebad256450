"""placement: what a job needs, and what a worker serves (host, capabilities, current job)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 12:20:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # existing jobs get no needs: any worker may run them, as before
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('needs', sa.JSON(), nullable=True))
    # existing rows are workers of the previous version: no capabilities told (they serve anything, as before)
    with op.batch_alter_table('workers') as batch:
        batch.add_column(sa.Column('host', sa.String(length=255), nullable=False, server_default=''))
        batch.add_column(sa.Column('capabilities', sa.JSON(), nullable=True))
        batch.add_column(sa.Column('current_job', sa.String(length=36), nullable=True))
        batch.add_column(sa.Column('started_at', sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('workers') as batch:
        batch.drop_column('started_at')
        batch.drop_column('current_job')
        batch.drop_column('capabilities')
        batch.drop_column('host')
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('needs')
