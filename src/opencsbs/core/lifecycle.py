"""The statuses of a backup and of a restore, named once (docs/engine.md, "Statuses").

A checkpoint_item (and its checkpoint and volume backups) moves ``protecting`` → ``available`` | ``error``; a
restore moves an available item through ``waiting_restore`` → ``restoring`` → ``available``; a delete through
``deleting`` → ``deleted`` (rows written by older versions may still read ``waiting_delete`` until their delete
runs; ``waiting_protect`` is the reference's word for a backup queued, kept for filters). A restore task is
``in_progress`` → ``success`` | ``error``. Source: ``backup_management/querying_a_single_backup.rst``
(``status`` enumeration) and ``restoration_management/creating_a_restoration_task.rst`` (``in_progress``; the
end words ``success`` and ``error`` are opencsbs's).

The values are the wire words, plain ``str``: compare and store them as they are.
"""

from __future__ import annotations


class ItemStatus:
    """Statuses of a checkpoint_item, a checkpoint and a volume backup."""

    WAITING_PROTECT = "waiting_protect"
    PROTECTING = "protecting"
    AVAILABLE = "available"
    WAITING_RESTORE = "waiting_restore"
    RESTORING = "restoring"
    ERROR = "error"
    WAITING_DELETE = "waiting_delete"
    DELETING = "deleting"
    DELETED = "deleted"

    #: every status, in lifecycle order (what ``GET /checkpoint_items?status=`` accepts)
    ALL = (WAITING_PROTECT, PROTECTING, AVAILABLE, WAITING_RESTORE, RESTORING, ERROR, WAITING_DELETE, DELETING,
           DELETED)
    #: a backup still being made
    MAKING = (WAITING_PROTECT, PROTECTING)
    #: a job holds the backup (made or restored from): it may not be deleted
    BUSY = MAKING + (WAITING_RESTORE, RESTORING)
    #: a delete accepted (queued or running)
    BEING_DELETED = (WAITING_DELETE, DELETING)
    #: no job will change the backup any more (but a new restore or delete)
    SETTLED = (AVAILABLE, ERROR, DELETED)


class RestoreStatus:
    """Statuses of a restore task (and of its target in ``resources_status``, which reads ``restoring`` then
    ``available`` or ``error`` while the task runs and ends)."""

    IN_PROGRESS = "in_progress"
    SUCCESS = "success"
    ERROR = "error"
