"""The steps of each job kind. Each step is idempotent and ends with :meth:`JobHandle.commit`.

backup  (target: checkpoint_item id)
    ``start``   choose the base of each disk (the newest available backup of the same volume, for incremental
                backups), then snapshot *all* disks of the server at one instant → ``copy``
    ``copy``    for each disk not yet available: read its snapshot (only the changed ranges where the driver
                knows them) into the bank under ``checkpoints/<checkpoint_id>/<volume_backup_id>``; the volume
                backup turns ``available`` in the same transaction that records the step → ``commit``
    ``commit``  checkpoint_item (and checkpoint) ``available`` with figures, server lock released → ``cleanup``
    ``cleanup`` drop the snapshot (its change tokens stay, older ones may go) → done
restore (target: restore id)
    ``start``   mark the checkpoint_item restoring, power the server off → ``write``
    ``write``   for each disk not yet written: bank index → target volume → ``finish``
    ``finish``  power on if asked, restore ``success``, item back to ``available``, lock released → done
delete  (target: checkpoint id; ``state.items``: checkpoint_item ids)
    ``start``   items ``deleting``; drop each volume backup's bank index; items (and the checkpoint when all
                of its items are gone) ``deleted`` → done

A failure fails the job cleanly: the item reads ``error`` with ``fail_code``/``fail_reason``/``fail_op``, bank
indexes of an unfinished backup are dropped, the snapshot is deleted, the server lock released. A checkpoint_item
never reads ``available`` before all of its volume backups are in the bank.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from opencsbs.bank.errors import ChunkMissing
from opencsbs.clouds.base import CloudContext, CloudUnavailable, ServerSnapshot, data_path
from opencsbs.core import codes
from opencsbs.core.errors import CSBSError
from opencsbs.core.timeutil import utcnow
from opencsbs.db.models import Checkpoint, CheckpointItem, ResourceLock, Restore, VolumeBackup
from opencsbs.engine.jobs import JobHandle, LeaseLost

log = logging.getLogger("opencsbs.engine")
MB = 1024 * 1024


class Retry(Exception):
    """A transient failure: give the job back so it is tried again later (counts as an attempt)."""


def snapshot_name(job_id: str) -> str:
    """The name of the server snapshot a backup job takes (the same on every retry)."""
    return f"csbs-{job_id}"


def index_name(checkpoint_id: str, volume_backup_id: str) -> str:
    """The bank index of one volume backup."""
    return f"checkpoints/{checkpoint_id}/{volume_backup_id}"


def saving_ratio(source: int, stored: int) -> int:
    """Space saving in percent (0-100) of storing ``stored`` bytes for ``source`` bytes of disk."""
    if source <= 0:
        return 0
    return max(0, min(100, int(round(100 * (1 - stored / source)))))


def speed_kb(nbytes: int, seconds: float) -> int:
    """Average speed in KB/s (integer)."""
    return int(nbytes / 1024 / seconds) if seconds > 0 else 0


class Progress:
    """Writes progress (0-100) of a job to the database at most every ``every`` seconds; aborts a job whose
    lease was lost (the bank's progress callback raises :class:`LeaseLost`)."""

    def __init__(self, job: JobHandle, write: Callable[[Session, int], None], every: float):
        self.job = job
        self.write = write
        self.every = every
        self.last = 0.0
        self.value = -1

    def __call__(self, percent: int, force: bool = False) -> None:
        self.job.check()
        percent = max(0, min(100, int(percent)))
        now = time.monotonic()
        if percent != self.value and (force or now - self.last >= self.every):
            self.last = now
            self.value = percent
            from opencsbs.db.base import transaction

            with transaction(self.job.sessions) as session:
                self.write(session, percent)


def _ctx(job: JobHandle) -> CloudContext:
    return CloudContext(project_id=job.project_id)


def _release_lock(session: Session, resource_id: str | None, job_id: str) -> None:
    if resource_id:
        session.execute(delete(ResourceLock).where(ResourceLock.resource_id == resource_id,
                                                   ResourceLock.job_id == job_id))


def _fail_fields(item: CheckpointItem, error: CSBSError, op: str) -> None:
    item.fail_code = error.error_code
    item.fail_reason = error.error_msg
    item.fail_op = op


# --- backup -------------------------------------------------------------------------------------------------


def run_backup(runtime: Any, job: JobHandle) -> None:
    """Run a backup job from its current step to the end."""
    if job.step == "start":
        _backup_snapshot(runtime, job)
    if job.step == "copy":
        _backup_copy(runtime, job)
    if job.step == "commit":
        _backup_commit(runtime, job)
    if job.step == "cleanup":
        _backup_cleanup(runtime, job)
    if job.step == "abort":
        _backup_abort(runtime, job)


def _load_item(session: Session, item_id: str) -> CheckpointItem:
    item = session.get(CheckpointItem, item_id)
    if item is None:
        raise CSBSError(codes.CHECKPOINT_ITEM_NOT_FOUND, item_id)
    return item


def _backup_snapshot(runtime: Any, job: JobHandle) -> None:
    with runtime.sessions() as session:
        item = _load_item(session, job.target_id)
        vbs = [(vb.id, vb.source_volume_id) for vb in item.volume_backups]
        bases: dict[str, dict[str, str | None]] = {}
        if item.incremental:
            for _vb_id, volume_id in vbs:
                prev = session.execute(
                    select(VolumeBackup.index_name, VolumeBackup.change_token)
                    .join(CheckpointItem, CheckpointItem.id == VolumeBackup.checkpoint_item_id)
                    .where(VolumeBackup.source_volume_id == volume_id, VolumeBackup.status == "available",
                           CheckpointItem.status.in_(("available", "waiting_restore", "restoring")),
                           CheckpointItem.project_id == item.project_id,
                           CheckpointItem.id != item.id)
                    .order_by(VolumeBackup.finished_at.desc())
                    .limit(1)
                ).first()
                if prev is not None and prev.index_name:
                    bases[volume_id] = {"index": prev.index_name, "token": prev.change_token}
        server_id = item.resource_id
    since = {vid: b["token"] for vid, b in bases.items() if b.get("token")}
    snapshot = data_path(runtime.driver).snapshot_server(_ctx(job), server_id, snapshot_name(job.id),
                                                         since=since or None)
    by_volume = {v.volume_id: v for v in snapshot.volumes}
    missing = [vid for _, vid in vbs if vid not in by_volume]
    if missing:
        data_path(runtime.driver).delete_snapshot(snapshot, keep_change_token=False)
        raise CSBSError(codes.INTERNAL_ERROR, message=f"volume(s) {','.join(missing)} were detached during the backup")

    def apply(session: Session) -> None:
        item = _load_item(session, job.target_id)
        for vb in item.volume_backups:
            snap = by_volume[vb.source_volume_id]
            vb.snapshot_id = snap.snapshot_id
            vb.change_token = snap.change_token
            vb.size_bytes = snap.size
            vb.incremental = vb.source_volume_id in bases
            vb.base_index = bases.get(vb.source_volume_id, {}).get("index")
        item.incremental = bool(bases)
        item.source_bytes = sum(v.size for v in snapshot.volumes)

    job.commit("copy", {"snapshot": snapshot.to_dict(), "bases": bases}, apply)


def _backup_copy(runtime: Any, job: JobHandle) -> None:
    snapshot = ServerSnapshot.from_dict(job.state["snapshot"])
    bases = job.state.get("bases") or {}
    with runtime.sessions() as session:
        item = _load_item(session, job.target_id)
        checkpoint_id = item.checkpoint_id
        todo = [(vb.id, vb.source_volume_id, vb.status) for vb in item.volume_backups]
    total = sum(snapshot.volume(vid).size for _, vid, _ in todo) or 1
    done_bytes = sum(snapshot.volume(vid).size for _, vid, st in todo if st == "available")

    def write_progress(session: Session, percent: int) -> None:
        item = session.get(CheckpointItem, job.target_id)
        if item is not None and item.status == "protecting":
            item.progress = min(percent, 99)

    progress = Progress(job, write_progress, runtime.settings.engine.progress_seconds)
    for vb_id, volume_id, status in todo:
        if status == "available":
            continue
        vsnap = snapshot.volume(volume_id)
        base = bases.get(volume_id) or {}
        base_index = base.get("index")
        changed = None
        if base_index and base.get("token") and vsnap.since == base.get("token"):
            changed = data_path(runtime.driver).changed_ranges(vsnap)
        name = index_name(checkpoint_id, vb_id)

        def on_progress(done: int, _total: int, _offset=done_bytes) -> None:
            progress(100 * (_offset + done) / total)

        started = time.monotonic()
        stats, used_base = _copy_volume(runtime, vsnap, name, base_index, changed, on_progress)
        seconds = max(time.monotonic() - started, 1e-6)
        done_bytes += vsnap.size

        def apply(session: Session, vb_id=vb_id, stats=stats, seconds=seconds, name=name,
                  used_base=used_base) -> None:
            vb = session.get(VolumeBackup, vb_id)
            vb.status = "available"
            vb.index_name = name
            vb.read_bytes = int(getattr(stats, "read_bytes", 0))
            vb.stored_bytes = int(getattr(stats, "stored_bytes", 0))
            vb.chunk_count = int(getattr(stats, "chunk_count", 0))
            vb.seconds = seconds
            vb.average_speed = speed_kb(vb.size_bytes, seconds)
            vb.finished_at = utcnow()
            if not used_base:
                vb.incremental = False
                vb.base_index = None

        job.commit("copy", None, apply)
    job.commit("commit")


def _copy_volume(runtime: Any, vsnap, name: str, base_index: str | None, changed, on_progress):
    """Copy one disk snapshot into the bank; returns ``(IndexStats, whether base_index was used)``."""
    reader = data_path(runtime.driver).open_snapshot(vsnap)
    try:
        try:
            stats = runtime.bank.backup_volume(reader, index_name=name, base_index=base_index,
                                               changed_ranges=list(changed) if changed is not None else None,
                                               progress=on_progress)
            return stats, base_index is not None
        except (LeaseLost, CSBSError):
            raise
        except Exception as exc:
            if base_index is None:
                if isinstance(exc, ChunkMissing):  # a chunk vanished (docs/bank.md): copy this disk again later
                    raise Retry(str(exc)) from exc
                raise
            # The base may have been deleted meanwhile: read the whole disk instead.
            log.warning("incremental copy of %s from %s failed; reading the whole disk", name, base_index,
                        exc_info=True)
            stats = runtime.bank.backup_volume(reader, index_name=name, base_index=None, changed_ranges=None,
                                               progress=on_progress)
            return stats, False
    finally:
        reader.close()


def _backup_commit(runtime: Any, job: JobHandle) -> None:
    def apply(session: Session) -> None:
        item = _load_item(session, job.target_id)
        vbs = item.volume_backups
        if any(vb.status != "available" for vb in vbs):
            raise CSBSError(codes.INTERNAL_ERROR, message="commit before every disk was copied")
        now = utcnow()
        seconds = sum(vb.seconds for vb in vbs)
        item.source_bytes = sum(vb.size_bytes for vb in vbs)
        item.stored_bytes = sum(vb.stored_bytes for vb in vbs)
        item.average_speed = speed_kb(item.source_bytes, seconds)
        item.progress = 100
        item.status = "available"
        item.protected_at = now
        item.finished_at = now
        checkpoint = session.get(Checkpoint, item.checkpoint_id)
        if all(i.status == "available" or i.id == item.id for i in checkpoint.items):
            checkpoint.status = "available"
        _release_lock(session, item.resource_id, job.id)

    job.commit("cleanup", None, apply)


def _backup_cleanup(runtime: Any, job: JobHandle) -> None:
    snap = job.state.get("snapshot")
    if snap:
        data_path(runtime.driver).delete_snapshot(ServerSnapshot.from_dict(snap))
    job.commit("done", status="done")


def fail_backup(runtime: Any, job: JobHandle, error: CSBSError) -> None:
    """End a backup job as failed. First, in one transaction and only if the job is still ours, the item (and
    checkpoint) read ``error`` with the reason and the server lock is released (step ``abort``); then the partial
    bank indexes and the snapshot are dropped and the job ends ``failed``. A crash in between is resumed at
    ``abort`` by another worker. A job whose commit already went through only had its cleanup left: it ends done.
    """
    with runtime.sessions() as session:
        item = session.get(CheckpointItem, job.target_id)
        committed = item is not None and item.status != "protecting" and job.step in ("cleanup", "done")
    if committed:
        snap = job.state.get("snapshot")
        try:
            if snap:
                data_path(runtime.driver).delete_snapshot(ServerSnapshot.from_dict(snap))
        except Exception:  # the backup is available; a stale snapshot is only disk space
            log.warning("could not delete snapshot of job %s", job.id, exc_info=True)
        job.commit("done", status="done")
        return

    def apply(session: Session) -> None:
        item = session.get(CheckpointItem, job.target_id)
        if item is None:
            return
        item.status = "error"
        _fail_fields(item, error, "backup")
        item.finished_at = utcnow()
        for vb in item.volume_backups:
            vb.status = "error"
        checkpoint = session.get(Checkpoint, item.checkpoint_id)
        if checkpoint is not None and all(i.status in ("error", "deleted") or i.id == item.id
                                          for i in checkpoint.items):
            checkpoint.status = "error"
        _release_lock(session, item.resource_id, job.id)

    if job.step != "abort":
        job.commit("abort", {"error": error.error_msg}, apply)
    _backup_abort(runtime, job)


def _backup_abort(runtime: Any, job: JobHandle) -> None:
    """Step ``abort`` of a failed backup: drop what it wrote to the bank and its snapshot, then end ``failed``."""
    with runtime.sessions() as session:
        item = session.get(CheckpointItem, job.target_id)
        names = [index_name(item.checkpoint_id, vb.id) for vb in item.volume_backups] if item else []
        server_id = item.resource_id if item else None
    for name in names:
        job.check()
        _drop_index(runtime, name)
    # the snapshot, or (failed before it was recorded) whatever the driver made under its name
    snap = job.state.get("snapshot") or (
        {"server_id": server_id, "name": snapshot_name(job.id), "volumes": []} if server_id else None)
    if snap:
        try:
            data_path(runtime.driver).delete_snapshot(ServerSnapshot.from_dict(snap), keep_change_token=False)
        except Exception:  # the job still fails cleanly; housekeeping drops what is left
            log.warning("could not delete snapshot of job %s", job.id, exc_info=True)

    def apply(session: Session) -> None:
        item = session.get(CheckpointItem, job.target_id)
        if item is not None:
            for vb in item.volume_backups:
                vb.index_name = None

    job.commit("failed", None, apply, status="failed", error=job.state.get("error"))


def _drop_index(runtime: Any, name: str) -> None:
    try:
        runtime.bank.delete_index(name)
    except Exception:  # a missing index is what we want
        log.debug("bank index %s not dropped (absent?)", name, exc_info=True)


# --- restore ------------------------------------------------------------------------------------------------


def run_restore(runtime: Any, job: JobHandle) -> None:
    """Run a restore job from its current step to the end."""
    if job.step == "start":
        _restore_prepare(runtime, job)
    if job.step == "write":
        _restore_write(runtime, job)
    if job.step == "finish":
        _restore_finish(runtime, job)


def _restore_prepare(runtime: Any, job: JobHandle) -> None:
    with runtime.sessions() as session:
        restore = session.get(Restore, job.target_id)
        server_id = restore.target_server_id
    was_running = data_path(runtime.driver).power_off(_ctx(job), server_id)

    def apply(session: Session) -> None:
        restore = session.get(Restore, job.target_id)
        item = session.get(CheckpointItem, restore.checkpoint_item_id)
        if item is not None:
            item.status = "restoring"
        restore.resources_status = {server_id: "restoring"}

    job.commit("write", {"was_running": was_running, "written": []}, apply)


def _restore_write(runtime: Any, job: JobHandle) -> None:
    with runtime.sessions() as session:
        restore = session.get(Restore, job.target_id)
        mapping = [(v["backup_id"], v["volume_id"]) for v in restore.parameters["targets"]["volumes"]]
        names = {}
        sizes = {}
        for backup_id, _ in mapping:
            vb = session.get(VolumeBackup, backup_id)
            names[backup_id] = vb.index_name
            sizes[backup_id] = max(vb.size_bytes, 1)
    total = sum(sizes.values())
    written = list(job.state.get("written") or [])

    def write_progress(session: Session, percent: int) -> None:
        restore = session.get(Restore, job.target_id)
        if restore is not None:
            restore.progress = min(percent, 99)

    progress = Progress(job, write_progress, runtime.settings.engine.progress_seconds)
    for backup_id, volume_id in mapping:
        if backup_id in written:
            continue
        offset = sum(sizes[b] for b in written)
        writer = data_path(runtime.driver).open_volume_writer(_ctx(job), volume_id)
        try:
            runtime.bank.restore_volume(names[backup_id], writer,
                                        progress=lambda d, _t, _o=offset: progress(100 * (_o + d) / total))
            writer.flush()
        finally:
            writer.close()
        written.append(backup_id)
        job.commit("write", {"written": list(written)})
    job.commit("finish")


def _restore_finish(runtime: Any, job: JobHandle) -> None:
    with runtime.sessions() as session:
        restore = session.get(Restore, job.target_id)
        power_on = bool(restore.parameters.get("power_on"))
        server_id = restore.target_server_id
    if power_on:
        data_path(runtime.driver).power_on(_ctx(job), server_id)

    def apply(session: Session) -> None:
        restore = session.get(Restore, job.target_id)
        restore.status = "success"
        restore.progress = 100
        restore.finished_at = utcnow()
        restore.resources_status = {server_id: "available"}
        item = session.get(CheckpointItem, restore.checkpoint_item_id)
        if item is not None and item.status in ("waiting_restore", "restoring"):
            item.status = "available"
        _release_lock(session, server_id, job.id)

    job.commit("done", None, apply, status="done")


def fail_restore(runtime: Any, job: JobHandle, error: CSBSError) -> None:
    """End a restore job as failed: restore ``error`` with the reason, item back to ``available``."""

    def apply(session: Session) -> None:
        restore = session.get(Restore, job.target_id)
        if restore is None:
            return
        restore.status = "error"
        restore.finished_at = utcnow()
        restore.resources_status = {restore.target_server_id: "error"}
        restore.resources_reason = {restore.target_server_id: error.error_msg}
        item = session.get(CheckpointItem, restore.checkpoint_item_id)
        if item is not None:
            if item.status in ("waiting_restore", "restoring"):
                item.status = "available"
            _fail_fields(item, error, "restore")
        _release_lock(session, restore.target_server_id, job.id)

    job.commit("failed", None, apply, status="failed", error=error.error_msg)


# --- delete -------------------------------------------------------------------------------------------------


def run_delete(runtime: Any, job: JobHandle) -> None:
    """Drop the bank indexes of the job's checkpoint_items, then mark them (and their checkpoint) deleted."""
    item_ids = list(job.state.get("items") or [])

    def mark_deleting(session: Session) -> None:
        for item in session.scalars(select(CheckpointItem).where(CheckpointItem.id.in_(item_ids))):
            if item.status == "waiting_delete":
                item.status = "deleting"
        checkpoint = session.get(Checkpoint, job.target_id)
        if checkpoint is not None and checkpoint.status == "waiting_delete":
            checkpoint.status = "deleting"

    if job.step == "start":
        job.commit("drop", None, mark_deleting)
    with runtime.sessions() as session:
        names = [
            vb.index_name
            for item in session.scalars(select(CheckpointItem).where(CheckpointItem.id.in_(item_ids)))
            for vb in item.volume_backups
            if vb.index_name
        ]
    for name in names:
        job.check()
        _drop_index(runtime, name)

    def apply(session: Session) -> None:
        now = utcnow()
        for item in session.scalars(select(CheckpointItem).where(CheckpointItem.id.in_(item_ids))):
            item.status = "deleted"
            item.finished_at = item.finished_at or now
            for vb in item.volume_backups:
                vb.status = "deleted"
        checkpoint = session.get(Checkpoint, job.target_id)
        if checkpoint is not None:
            session.flush()
            statuses = {i.status for i in checkpoint.items}
            if statuses <= {"deleted"}:
                checkpoint.status = "deleted"
            elif checkpoint.status in ("waiting_delete", "deleting"):
                checkpoint.status = "available" if "available" in statuses else "error"

    job.commit("done", None, apply, status="done")


def fail_delete(runtime: Any, job: JobHandle, error: CSBSError) -> None:
    """End a delete job as failed: its items read ``error`` with ``fail_op`` delete."""
    item_ids = list(job.state.get("items") or [])

    def apply(session: Session) -> None:
        for item in session.scalars(select(CheckpointItem).where(CheckpointItem.id.in_(item_ids))):
            if item.status in ("waiting_delete", "deleting"):
                item.status = "error"
                _fail_fields(item, error, "delete")
        checkpoint = session.get(Checkpoint, job.target_id)
        if checkpoint is not None and checkpoint.status in ("waiting_delete", "deleting"):
            checkpoint.status = "error"

    job.commit("failed", None, apply, status="failed", error=error.error_msg)


RUNNERS = {"backup": run_backup, "restore": run_restore, "delete": run_delete}
FAILERS = {"backup": fail_backup, "restore": fail_restore, "delete": fail_delete}
TRANSIENT = (CloudUnavailable, Retry)
