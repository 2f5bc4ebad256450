"""One backup (checkpoint_item) as an operator's tool follows it: found by id or by its checkpoint, read again
while its job runs. The CSBS API's listing and showing of backups stay in :mod:`opencsbs.service.backups`.

Cost: one primary-key or indexed query per call.
"""

from __future__ import annotations

from dataclasses import dataclass

from opencsbs.db.models import CheckpointItem
from opencsbs.runtime import Runtime


@dataclass(frozen=True)
class ItemState:
    """What an operator sees of one backup. ``progress`` in percent (0-100); ``source_bytes``/``stored_bytes``
    in bytes; ``disks``: ``(volume backup id, source volume id)`` in the backup's disk order."""

    id: str
    name: str
    checkpoint_id: str
    project_id: str
    resource_id: str
    status: str
    progress: int
    fail_reason: str
    source_bytes: int
    stored_bytes: int
    disks: tuple[tuple[str, str], ...]


def _state(item: CheckpointItem) -> ItemState:
    return ItemState(id=item.id, name=item.name, checkpoint_id=item.checkpoint_id, project_id=item.project_id,
                     resource_id=item.resource_id, status=item.status, progress=item.progress,
                     fail_reason=item.fail_reason, source_bytes=item.source_bytes, stored_bytes=item.stored_bytes,
                     disks=tuple((vb.id, vb.source_volume_id) for vb in item.volume_backups))


def find_item(runtime: Runtime, item_id: str) -> ItemState | None:
    """The backup ``item_id`` of any project, or ``None`` when there is none."""
    with runtime.sessions() as session:
        item = session.get(CheckpointItem, item_id)
        return None if item is None else _state(item)


def item_of_checkpoint(runtime: Runtime, checkpoint_id: str) -> ItemState:
    """The one backup of ``checkpoint_id`` (a checkpoint made by ``create_backup`` holds exactly one).
    Raises ``sqlalchemy.exc.NoResultFound`` when the checkpoint has none."""
    with runtime.sessions() as session:
        return _state(session.query(CheckpointItem).filter_by(checkpoint_id=checkpoint_id).one())
