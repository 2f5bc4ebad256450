"""verify runs, restore drills, per-backup check results, check schedules

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 07:50:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('verify_runs',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('project_id', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('selector', sa.JSON(), nullable=False),
    sa.Column('outdated_after_days', sa.Integer(), nullable=True),
    sa.Column('verified', sa.JSON(), nullable=False),
    sa.Column('skipped', sa.JSON(), nullable=False),
    sa.Column('affected', sa.JSON(), nullable=False),
    sa.Column('problems', sa.JSON(), nullable=False),
    sa.Column('chunks_checked', sa.Integer(), nullable=False),
    sa.Column('bytes_checked', sa.BigInteger(), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('schedule_id', sa.String(length=36), nullable=True),
    sa.Column('job_id', sa.String(length=36), nullable=True),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_verify_runs'))
    )
    with op.batch_alter_table('verify_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_verify_runs_project_id'), ['project_id'], unique=False)

    op.create_table('drills',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('project_id', sa.String(length=64), nullable=False),
    sa.Column('checkpoint_item_id', sa.String(length=36), nullable=False),
    sa.Column('resource_id', sa.String(length=64), nullable=False),
    sa.Column('resource_name', sa.String(length=255), nullable=False),
    sa.Column('choice', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('rto_seconds', sa.Double(), nullable=True),
    sa.Column('bytes_restored', sa.BigInteger(), nullable=False),
    sa.Column('volumes', sa.JSON(), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('schedule_id', sa.String(length=36), nullable=True),
    sa.Column('job_id', sa.String(length=36), nullable=True),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_drills'))
    )
    with op.batch_alter_table('drills', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_drills_project_id'), ['project_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_drills_checkpoint_item_id'), ['checkpoint_item_id'], unique=False)

    op.create_table('backup_checks',
    sa.Column('checkpoint_item_id', sa.String(length=36), nullable=False),
    sa.Column('project_id', sa.String(length=64), nullable=False),
    sa.Column('resource_id', sa.String(length=64), nullable=False),
    sa.Column('last_verified_at', sa.DateTime(), nullable=True),
    sa.Column('verify_result', sa.String(length=16), nullable=True),
    sa.Column('verify_detail', sa.JSON(), nullable=False),
    sa.Column('verify_run_id', sa.String(length=36), nullable=True),
    sa.Column('last_drill_at', sa.DateTime(), nullable=True),
    sa.Column('drill_result', sa.String(length=16), nullable=True),
    sa.Column('drill_id', sa.String(length=36), nullable=True),
    sa.Column('last_good_drill_at', sa.DateTime(), nullable=True),
    sa.Column('drill_rto_seconds', sa.Double(), nullable=True),
    sa.PrimaryKeyConstraint('checkpoint_item_id', name=op.f('pk_backup_checks'))
    )
    with op.batch_alter_table('backup_checks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_backup_checks_project_id'), ['project_id'], unique=False)

    op.create_table('check_schedules',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('project_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('pattern', sa.Text(), nullable=False),
    sa.Column('start_time', sa.DateTime(), nullable=False),
    sa.Column('next_run_at', sa.DateTime(), nullable=True),
    sa.Column('parameters', sa.JSON(), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_check_schedules'))
    )
    with op.batch_alter_table('check_schedules', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_check_schedules_project_id'), ['project_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_check_schedules_next_run_at'), ['next_run_at'], unique=False)


def downgrade() -> None:
    for table, indexes in (('check_schedules', ('project_id', 'next_run_at')),
                           ('backup_checks', ('project_id',)),
                           ('drills', ('project_id', 'checkpoint_item_id')),
                           ('verify_runs', ('project_id',))):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in indexes:
                batch_op.drop_index(batch_op.f(f'ix_{table}_{column}'))
        op.drop_table(table)
