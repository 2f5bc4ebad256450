"""checkpoint_item_tallies: per project and status, the number of checkpoint_items and their stored bytes, kept by
triggers, so counts and quota checks do not read one index entry per backup

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 15:40:00.000000

The triggers (``checkpoint_items_tally_*``) add a row for every insert and delete of a checkpoint_item and for
every update that changes its ``status``, ``project_id`` or ``stored_bytes`` (minus the old values, plus the new);
PostgreSQL sums the rows of a multi-row INSERT or DELETE into one per project and status (statement triggers with
transition tables). The table starts from the items already there.

A later migration that rebuilds ``checkpoint_items`` on SQLite (Alembic batch mode: copy into a new table, drop
the old one) drops these triggers with the old table and must create them again (:data:`SQLITE_TRIGGERS`);
``tests/test_item_tallies.py`` checks that they exist at head.
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

TALLY = "INSERT INTO checkpoint_item_tallies (project_id, status, n, stored_bytes) VALUES "
SQLITE_TRIGGERS = [
    "CREATE TRIGGER checkpoint_items_tally_insert AFTER INSERT ON checkpoint_items BEGIN "
    + TALLY + "(NEW.project_id, NEW.status, 1, NEW.stored_bytes); END",
    "CREATE TRIGGER checkpoint_items_tally_delete AFTER DELETE ON checkpoint_items BEGIN "
    + TALLY + "(OLD.project_id, OLD.status, -1, -OLD.stored_bytes); END",
    "CREATE TRIGGER checkpoint_items_tally_update AFTER UPDATE OF status, project_id, stored_bytes "
    "ON checkpoint_items WHEN OLD.status IS NOT NEW.status OR OLD.project_id IS NOT NEW.project_id "
    "OR OLD.stored_bytes IS NOT NEW.stored_bytes BEGIN "
    + TALLY + "(OLD.project_id, OLD.status, -1, -OLD.stored_bytes); "
    + TALLY + "(NEW.project_id, NEW.status, 1, NEW.stored_bytes); END",
]
POSTGRESQL_TRIGGERS = [
    """CREATE FUNCTION checkpoint_items_tally_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO checkpoint_item_tallies (project_id, status, n, stored_bytes)
  SELECT project_id, status, count(*), sum(stored_bytes) FROM tally_new GROUP BY project_id, status;
  RETURN NULL;
END $$""",
    """CREATE FUNCTION checkpoint_items_tally_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO checkpoint_item_tallies (project_id, status, n, stored_bytes)
  SELECT project_id, status, -count(*), -sum(stored_bytes) FROM tally_old GROUP BY project_id, status;
  RETURN NULL;
END $$""",
    """CREATE FUNCTION checkpoint_items_tally_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO checkpoint_item_tallies (project_id, status, n, stored_bytes)
  VALUES (OLD.project_id, OLD.status, -1, -OLD.stored_bytes), (NEW.project_id, NEW.status, 1, NEW.stored_bytes);
  RETURN NULL;
END $$""",
    "CREATE TRIGGER checkpoint_items_tally_insert AFTER INSERT ON checkpoint_items "
    "REFERENCING NEW TABLE AS tally_new FOR EACH STATEMENT EXECUTE FUNCTION checkpoint_items_tally_insert()",
    "CREATE TRIGGER checkpoint_items_tally_delete AFTER DELETE ON checkpoint_items "
    "REFERENCING OLD TABLE AS tally_old FOR EACH STATEMENT EXECUTE FUNCTION checkpoint_items_tally_delete()",
    "CREATE TRIGGER checkpoint_items_tally_update AFTER UPDATE OF status, project_id, stored_bytes "
    "ON checkpoint_items FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status "
    "OR OLD.project_id IS DISTINCT FROM NEW.project_id OR OLD.stored_bytes IS DISTINCT FROM NEW.stored_bytes) "
    "EXECUTE FUNCTION checkpoint_items_tally_update()",
]
NAMES = ("insert", "delete", "update")


def upgrade() -> None:
    op.create_table(
        'checkpoint_item_tallies',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('project_id', sa.String(length=64), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('n', sa.BigInteger(), nullable=False),
        sa.Column('stored_bytes', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_checkpoint_item_tallies')),
    )
    op.create_index('ix_checkpoint_item_tallies_project_id_status', 'checkpoint_item_tallies',
                    ['project_id', 'status'], unique=False)
    op.execute("INSERT INTO checkpoint_item_tallies (project_id, status, n, stored_bytes) "
               "SELECT project_id, status, count(*), coalesce(sum(stored_bytes), 0) FROM checkpoint_items "
               "GROUP BY project_id, status")
    for ddl in SQLITE_TRIGGERS if op.get_bind().dialect.name == 'sqlite' else POSTGRESQL_TRIGGERS:
        op.execute(ddl)


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == 'postgresql'
    for name in NAMES:
        op.execute(f"DROP TRIGGER IF EXISTS checkpoint_items_tally_{name}"
                   + (" ON checkpoint_items" if postgresql else ""))
        if postgresql:
            op.execute(f"DROP FUNCTION IF EXISTS checkpoint_items_tally_{name}()")
    op.drop_index('ix_checkpoint_item_tallies_project_id_status', table_name='checkpoint_item_tallies')
    op.drop_table('checkpoint_item_tallies')
