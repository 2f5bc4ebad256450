"""What the steps of every job kind share: progress reports, the cloud context of a job, the server lock, the
failure fields of a checkpoint_item, the bank index names, and dropping an index."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import delete
from sqlalchemy.orm import Session

from opencsbs.bank.face import VolumeStore
from opencsbs.clouds.base import CloudContext
from opencsbs.core import codes
from opencsbs.core.errors import CSBSError
from opencsbs.db.base import transaction
from opencsbs.db.models import CheckpointItem, ResourceLock
from opencsbs.engine.jobs import JobHandle
from opencsbs.runtime import Runtime

log = logging.getLogger("opencsbs.engine")


def index_name(checkpoint_id: str, volume_backup_id: str) -> str:
    """The bank index of one volume backup."""
    return f"checkpoints/{checkpoint_id}/{volume_backup_id}"


class Progress:
    """Writes progress (0-100) of a job to the database at most every ``every`` seconds (and reads whether the
    job was cancelled); aborts a job whose lease was lost or that was cancelled (the bank's progress callback
    raises :class:`~opencsbs.engine.jobs.LeaseLost` / :class:`~opencsbs.engine.jobs.JobCancelled`).

    ``write(session, percent)`` runs in the write's transaction; it is called when the percentage changed, or
    when the caller says something else it persists changed (``news``, e.g. the bytes a backup stored)."""

    def __init__(self, job: JobHandle, write: Callable[[Session, int], None], every: float):
        self.job = job
        self.write = write
        self.every = every
        self.last = 0.0
        self.value = -1

    def __call__(self, percent: float, force: bool = False, news: bool = False) -> None:
        """Report ``percent`` (0-100); written when it (or, ``news``, something else ``write`` persists) changed
        and ``every`` seconds have passed since the last write, or at once with ``force``."""
        self.job.check()
        percent = max(0, min(100, int(percent)))
        now = time.monotonic()
        if (percent != self.value or news) and (force or now - self.last >= self.every):
            self.last = now
            self.value = percent
            with transaction(self.job.sessions) as session:
                self.write(session, percent)
                self.job.see_cancel(session)


def cloud_context(job: JobHandle) -> CloudContext:
    """The cloud context the driver is called with for ``job`` (its project)."""
    return CloudContext(project_id=job.project_id)


def release_lock(session: Session, resource_id: str | None, job_id: str) -> None:
    """Drop the server lock ``job_id`` holds on ``resource_id`` (none: nothing)."""
    if resource_id:
        session.execute(delete(ResourceLock).where(ResourceLock.resource_id == resource_id,
                                                   ResourceLock.job_id == job_id))


def fail_fields(item: CheckpointItem, error: CSBSError, op: str) -> None:
    """Record on ``item`` why (``error``) the operation ``op`` (backup, restore, delete) failed."""
    item.fail_code = error.error_code
    item.fail_reason = error.error_msg
    item.fail_op = op


def load_item(session: Session, item_id: str) -> CheckpointItem:
    """The checkpoint_item ``item_id``; raises ``CSBSError(CHECKPOINT_ITEM_NOT_FOUND)``."""
    item = session.get(CheckpointItem, item_id)
    if item is None:
        raise CSBSError(codes.CHECKPOINT_ITEM_NOT_FOUND, item_id)
    return item


def drop_index(runtime: Runtime, name: str) -> None:
    """Drop the bank index ``name``; an index already gone (or a bank that fails to drop it) is only logged."""
    try:
        bank: VolumeStore = runtime.bank
        bank.delete_index(name)
    except Exception:  # a missing index is what we want
        log.debug("bank index %s not dropped (absent?)", name, exc_info=True)
