"""A backup's catalog record (``bank/catalog.py``) built from the database and written into a bank: by the backup
job once the backup is available and by the copy job on the replica, so a bank alone can rebuild the catalog
(``service.catalog.rebuild_catalog``, docs/replication.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from opencsbs.bank import Bank
from opencsbs.bank.catalog import delete_record, write_record
from opencsbs.db.models import Checkpoint, CheckpointItem
from opencsbs.engine._common import log
from opencsbs.runtime import Runtime


def _row(obj) -> dict[str, Any]:
    return {c.key: (getattr(obj, c.key).isoformat() if isinstance(getattr(obj, c.key), datetime)
                    else getattr(obj, c.key)) for c in obj.__table__.columns}


def record_of(runtime: Runtime, item_id: str) -> dict[str, Any] | None:
    """The catalog record of the backup ``item_id`` from the database (None: no such item)."""
    with runtime.sessions() as session:
        item = session.get(CheckpointItem, item_id)
        if item is None:
            return None
        checkpoint = session.get(Checkpoint, item.checkpoint_id)
        return {"checkpoint": _row(checkpoint), "item": _row(item),
                "volume_backups": [_row(vb) for vb in item.volume_backups]}


def save_record(runtime: Runtime, bank: Bank, item_id: str) -> None:
    """Write the catalog record of the backup ``item_id`` into ``bank`` (an unknown item: nothing)."""
    doc = record_of(runtime, item_id)
    if doc is not None:
        write_record(bank, item_id, doc)




def save_record_quietly(runtime: Runtime, bank: Bank, item_id: str) -> None:
    """:func:`save_record`; a failure is only logged (the backup stands; ``rebuild-catalog`` misses it)."""
    try:
        save_record(runtime, bank, item_id)
    except Exception:  # noqa: BLE001 - the record is a disaster-recovery aid, not part of the backup
        log.warning("catalog record of backup %s not written", item_id, exc_info=True)


def drop_record(runtime: Runtime, item_id: str) -> None:
    """Drop the catalog record of a deleted backup from the bank; a failure is only logged."""
    try:
        delete_record(runtime.bank, item_id)
    except Exception:  # noqa: BLE001 - a left record names indexes that are gone: rebuild-catalog skips it
        log.debug("catalog record of backup %s not dropped", item_id, exc_info=True)
