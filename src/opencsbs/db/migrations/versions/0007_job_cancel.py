"""job cancel requests and the workers' heartbeat rows

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 07:50:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('cancel_requested', sa.String(length=255), nullable=True))
    op.create_table('workers',
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('seen_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_index(op.f('ix_workers_seen_at'), 'workers', ['seen_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_workers_seen_at'), table_name='workers')
    op.drop_table('workers')
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('cancel_requested')
