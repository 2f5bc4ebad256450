"""The catalog of backups kept in the bank itself (``bank/catalog.py``): write a backup's record, and rebuild the
database's checkpoints, checkpoint_items and volume backups from a bank's records after the database is lost
(``opencsbs bank rebuild-catalog``, docs/replication.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime

from opencsbs.bank import Bank
from opencsbs.bank.catalog import list_records, read_record
from opencsbs.bank.errors import BankError
from opencsbs.db.base import transaction
from opencsbs.db.models import Checkpoint, CheckpointItem, VolumeBackup
from opencsbs.engine.catalog import record_of, save_record  # noqa: F401 - part of this use case's face
from opencsbs.runtime import Runtime


def _build(model, doc: dict[str, Any]):
    values = {}
    for c in model.__table__.columns:
        if c.key not in doc:
            continue
        v = doc[c.key]
        if isinstance(c.type, DateTime) and isinstance(v, str):
            v = datetime.fromisoformat(v)
        values[c.key] = v
    return model(**values)


@dataclass
class RebuildReport:
    """What a rebuild did: ``restored`` checkpoint_item ids added, ``present`` already in the database,
    ``missing_indexes`` items left out because an index is not in the bank, ``errors`` unreadable records."""

    restored: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    missing_indexes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def rebuild_catalog(runtime: Runtime, bank: Bank) -> RebuildReport:
    """Add to the database every backup whose catalog record is in ``bank`` and whose indexes are all there
    (status ``available``), with its checkpoint; backups already known are left alone."""
    report = RebuildReport()
    indexes = set(bank.list_indexes())
    for item_id in list_records(bank):
        try:
            doc = read_record(bank, item_id)
        except BankError as exc:
            report.errors.append(f"{item_id}: {exc}")
            continue
        if doc is None:
            continue
        names = [vb.get("index_name") for vb in doc.get("volume_backups", [])]
        if not names or any(n not in indexes for n in names):
            report.missing_indexes.append(item_id)
            continue
        with transaction(runtime.sessions) as session:
            if session.get(CheckpointItem, item_id) is not None:
                report.present.append(item_id)
                continue
            cp = doc["checkpoint"]
            if session.get(Checkpoint, cp["id"]) is None:
                checkpoint = _build(Checkpoint, cp)
                checkpoint.status = "available"
                session.add(checkpoint)
                session.flush()
            item = _build(CheckpointItem, doc["item"])
            item.status, item.job_id, item.progress = "available", None, 100
            session.add(item)
            session.flush()
            for vbd in doc["volume_backups"]:
                vb = _build(VolumeBackup, vbd)
                vb.status = "available"
                session.add(vb)
        report.restored.append(item_id)
    return report
