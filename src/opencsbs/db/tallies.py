"""Counts of checkpoint_items per project and status, read from ``checkpoint_item_tallies`` instead of the items.

The tally rows are written by database triggers on ``checkpoint_items`` (migration 0011): every insert, delete and
change of ``status``, ``project_id`` or ``stored_bytes`` adds rows of ``(project_id, status, n, stored_bytes)``
deltas, in the same transaction as the change, so a committed item is always counted. Reading a project's count
(:func:`tally`) sums a handful of rows, whatever the number of backups; :func:`compact` (run by housekeeping)
folds a project's deltas into one row per status so that handful stays small.

Source of the costs: docs/performance.md "The cost curve".
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.orm import Session

from opencsbs.db.base import dialect_of
from opencsbs.db.models import CheckpointItemTally as T

#: the names of the triggers migration 0011 creates (tests/test_item_tallies.py checks they exist at head)
TRIGGERS = ("checkpoint_items_tally_insert", "checkpoint_items_tally_delete", "checkpoint_items_tally_update")
#: a project whose tally has more rows than this is compacted by :func:`compact`
COMPACT_ABOVE = 16


def tally(session: Session, project_id: str | None, *, status: str | None = None,
          exclude_status: str | None = None) -> tuple[int, int]:
    """``(items, stored_bytes)`` of ``project_id``'s checkpoint_items (every project's when None) whose status is
    ``status`` (when given) and is not ``exclude_status`` (when given). Exact: the triggers write the deltas in
    the transaction that changes the items."""
    query = select(func.coalesce(func.sum(T.n), 0), func.coalesce(func.sum(T.stored_bytes), 0))
    if project_id is not None:
        query = query.where(T.project_id == project_id)
    if status is not None:
        query = query.where(T.status == status)
    if exclude_status is not None:
        query = query.where(T.status != exclude_status)
    n, stored = session.execute(query).one()
    return int(n), int(stored)


def compact(session: Session, above: int = COMPACT_ABOVE) -> int:
    """Fold the tally rows of every project that has more than ``above`` of them into one row per status (none for
    a status whose items are all gone). Returns the number of rows removed (net). Safe beside writers and beside
    another compaction: PostgreSQL deletes and re-inserts in one statement (the rows a concurrent compaction took
    are skipped by the DELETE and absent from what it returns); SQLite has one writer at a time, and the sums are
    of exactly the rows the transaction then deletes. The caller commits."""
    busy = select(T.project_id).group_by(T.project_id).having(func.count() > above)
    if dialect_of(session) == "postgresql":
        before = session.scalar(select(func.count()).select_from(T).where(T.project_id.in_(busy)))
        result = session.execute(text(
            "WITH gone AS (DELETE FROM checkpoint_item_tallies WHERE project_id IN ("
            "SELECT project_id FROM checkpoint_item_tallies GROUP BY project_id HAVING count(*) > :above) "
            "RETURNING project_id, status, n, stored_bytes) "
            "INSERT INTO checkpoint_item_tallies (project_id, status, n, stored_bytes) "
            "SELECT project_id, status, sum(n), sum(stored_bytes) FROM gone GROUP BY project_id, status "
            "HAVING sum(n) <> 0 OR sum(stored_bytes) <> 0"), {"above": above})
        return max(0, int(before or 0) - int(result.rowcount or 0))
    rows = session.execute(delete(T).where(T.project_id.in_(busy))
                           .returning(T.project_id, T.status, T.n, T.stored_bytes)).all()
    sums: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for project_id, status, n, stored in rows:
        sums[(project_id, status)][0] += n
        sums[(project_id, status)][1] += stored
    kept = [{"project_id": p, "status": s, "n": n, "stored_bytes": b}
            for (p, s), (n, b) in sums.items() if n or b]
    if kept:
        session.execute(insert(T), kept)
    return len(rows) - len(kept)
