"""indexes of the list and count calls: keyset walks over (created_at, id) after the filter's column, with status
(and project_id after policy_id or resource_id) last so a count reads the index only

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 12:30:00.000000

The single-column indexes these extend (project_id, policy_id, resource_id, created_at of checkpoint_items;
project_id of policies) go: each new index starts with the same column, so every query that used one still can.
"""
from alembic import op


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

ITEMS = {
    'ix_checkpoint_items_project_id_created_at_id': ['project_id', 'created_at', 'id', 'status'],
    'ix_checkpoint_items_policy_id_created_at_id': ['policy_id', 'created_at', 'id', 'status', 'project_id'],
    'ix_checkpoint_items_resource_id_created_at_id': ['resource_id', 'created_at', 'id', 'status', 'project_id'],
    'ix_checkpoint_items_created_at_id': ['created_at', 'id', 'status'],
}
ITEMS_OLD = {
    'ix_checkpoint_items_project_id': ['project_id'],
    'ix_checkpoint_items_policy_id': ['policy_id'],
    'ix_checkpoint_items_resource_id': ['resource_id'],
    'ix_checkpoint_items_created_at': ['created_at'],
}
POLICIES = {
    'ix_policies_project_id_created_at_id': ['project_id', 'created_at', 'id'],
    'ix_policies_created_at_id': ['created_at', 'id'],
}
POLICIES_OLD = {'ix_policies_project_id': ['project_id']}


def upgrade() -> None:
    for name, cols in ITEMS.items():
        op.create_index(name, 'checkpoint_items', cols, unique=False)
    for name in ITEMS_OLD:
        op.drop_index(name, table_name='checkpoint_items')
    for name, cols in POLICIES.items():
        op.create_index(name, 'policies', cols, unique=False)
    for name in POLICIES_OLD:
        op.drop_index(name, table_name='policies')


def downgrade() -> None:
    for name, cols in POLICIES_OLD.items():
        op.create_index(name, 'policies', cols, unique=False)
    for name in POLICIES:
        op.drop_index(name, table_name='policies')
    for name, cols in ITEMS_OLD.items():
        op.create_index(name, 'checkpoint_items', cols, unique=False)
    for name in ITEMS:
        op.drop_index(name, table_name='checkpoint_items')
