"""Catalog records: one small object per backup (checkpoint_item) beside its indexes, so that the catalog of
backups (which server, which disks, when, which policy) can be rebuilt from a bank alone after the database is
lost (``opencsbs bank rebuild-catalog``, docs/replication.md).

Layout: ``catalog/<checkpoint_item_id>.json``, sealed like an index (zstd, and AES-256-GCM bound to its name when
the bank is encrypted; :meth:`~opencsbs.bank.codec.Codec.encode_index`). The document is
``{"format": 1, "checkpoint": {column: value}, "item": {column: value}, "volume_backups": [{column: value}]}``
(the database rows, timestamps as ISO 8601 strings), written once the backup is available and on every copy.
The bank's GC never touches ``catalog/``; a dropped backup's record goes with its indexes (:func:`delete_record`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from opencsbs.bank.bank import Bank
from opencsbs.bank.errors import BankError, ChunkDamaged, ObjectNotFound

FORMAT = 1
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")


def record_key(item_id: str) -> str:
    """The object key of the catalog record of checkpoint_item ``item_id``; raises BankError for a bad id."""
    if not _ID_RE.match(item_id or ""):
        raise BankError(f"invalid checkpoint_item id {item_id!r}")
    return f"catalog/{item_id}.json"


def write_record(bank: Bank, item_id: str, doc: dict[str, Any]) -> None:
    """Store (replace) the catalog record of ``item_id`` (``doc`` as in the module doc, without ``format``)."""
    key = record_key(item_id)
    raw = json.dumps({"format": FORMAT, **doc}, sort_keys=True, default=str).encode()
    bank.store.put(key, bank.codec.encode_index(key, raw))


def read_record(bank: Bank, item_id: str) -> dict[str, Any] | None:
    """The catalog record of ``item_id``, or None when there is none. Raises ChunkDamaged when unreadable."""
    key = record_key(item_id)
    try:
        blob = bank.store.get(key)
    except ObjectNotFound:
        return None
    try:
        doc = json.loads(bank.codec.decode_index(key, blob))
    except ValueError as exc:
        raise ChunkDamaged(key, f"unreadable: {exc}") from None
    if doc.get("format") != FORMAT:
        raise ChunkDamaged(key, "unknown catalog record format")
    return doc


def list_records(bank: Bank) -> list[str]:
    """The checkpoint_item ids with a catalog record in ``bank``, sorted."""
    return sorted(info.key[len("catalog/"):-len(".json")] for info in bank.store.list("catalog/")
                  if info.key.endswith(".json"))


def delete_record(bank: Bank, item_id: str) -> None:
    """Drop the catalog record of ``item_id`` (absent: nothing)."""
    bank.store.delete(record_key(item_id))
