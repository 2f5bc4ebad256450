"""replication: copies of backups to second banks, replication rules

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 07:50:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('backup_copies',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('project_id', sa.String(length=64), nullable=False),
    sa.Column('checkpoint_item_id', sa.String(length=36), nullable=False),
    sa.Column('replica', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('rule_id', sa.String(length=36), nullable=True),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('sent_bytes', sa.BigInteger(), nullable=False),
    sa.Column('sent_chunks', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('job_id', sa.String(length=36), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_backup_copies'))
    )
    with op.batch_alter_table('backup_copies', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_backup_copies_checkpoint_item_id'), ['checkpoint_item_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_backup_copies_project_id'), ['project_id'], unique=False)

    op.create_table('replication_rules',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('project_id', sa.String(length=64), nullable=False),
    sa.Column('policy_id', sa.String(length=36), nullable=False),
    sa.Column('replica', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_replication_rules')),
    sa.UniqueConstraint('policy_id', 'replica', name='uq_replication_rules_policy_replica')
    )
    with op.batch_alter_table('replication_rules', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_replication_rules_policy_id'), ['policy_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_replication_rules_project_id'), ['project_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('replication_rules', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_replication_rules_project_id'))
        batch_op.drop_index(batch_op.f('ix_replication_rules_policy_id'))
    op.drop_table('replication_rules')
    with op.batch_alter_table('backup_copies', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_backup_copies_project_id'))
        batch_op.drop_index(batch_op.f('ix_backup_copies_checkpoint_item_id'))
    op.drop_table('backup_copies')
