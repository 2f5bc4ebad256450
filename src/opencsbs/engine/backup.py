"""The backup job (target: checkpoint_item id): a server's disks into the bank, and its failure path.

Steps (:data:`STEPS`, run in this order; each ends with :meth:`~opencsbs.engine.jobs.JobHandle.commit`):

``start``    choose the base of each disk (the newest available backup of the same volume, for incremental
             backups), then snapshot *all* disks of the server at one instant (``driver.snapshot_server``)
             → ``copy``
``copy``     for each disk not yet available: read its snapshot (``driver.open_snapshot``; only the changed
             ranges where the driver knows them) into the bank (:meth:`VolumeStore.backup_volume
             <opencsbs.bank.face.VolumeStore.backup_volume>`) under ``checkpoints/<checkpoint_id>/<volume_backup_id>``;
             the volume backup turns ``available`` in the same transaction that records the step → ``commit``
``commit``   on a bank with S3 Object Lock (``bank.s3_object_lock``), a backup that retention locks keep gets the
             storage's retention on its indexes and chunks (:func:`opencsbs.core.locks.storage_retention`); then
             checkpoint_item (and checkpoint) ``available`` with figures, server lock released → ``cleanup``
``cleanup``  drop the snapshot (its change tokens stay, older ones may go) → done
``abort``    (:func:`fail_backup`) drop the bank indexes written so far and the snapshot → failed

The job's state: ``{"snapshot": ServerSnapshot.to_dict(), "bases": {volume_id: {"index", "token"}},
"stored": {volume_backup_id: {claim: bytes}}}``, and ``"error"`` once failing; :func:`change_tokens_of` reads the
change tokens it holds. ``stored``: the bytes each attempt (by its claim number, as a string) wrote to the bank for
a volume backup, persisted with its progress reports, when it gives the job back, and with the disk's commit
(:class:`StoredBytes`); a volume backup's ``stored_bytes`` is their sum, so a resumed backup reports what an
uninterrupted one would (an interrupted attempt's chunks are found present by the next one and count there as
reused). A checkpoint_item never reads ``available`` before all of its volume backups are in the bank.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from opencsbs.bank import IndexStats
from opencsbs.bank.errors import BankUnavailable, ChunkMissing
from opencsbs.bank.face import VolumeStore
from opencsbs.clouds.base import DataPath, ServerSnapshot, VolumeSnapshot, data_path
from opencsbs.core import codes
from opencsbs.core.blocks import Range
from opencsbs.core.errors import CSBSError
from opencsbs.core.figures import speed_kb
from opencsbs.engine.pacing import paced
from opencsbs.core.locks import storage_retention
from opencsbs.core.timeutil import utcnow
from opencsbs.db.base import transaction
from opencsbs.db.locks import lock_facts, rule_backup
from opencsbs.db.models import Checkpoint, CheckpointItem, VolumeBackup
from opencsbs.engine._common import (
    Progress,
    cloud_context,
    drop_index,
    fail_fields,
    index_name,
    load_item,
    release_lock,
)
from opencsbs.engine.catalog import save_record_quietly
from opencsbs.engine.jobs import JobHandle, LeaseLost, Retry
from opencsbs.runtime import Runtime

log = logging.getLogger("opencsbs.engine")


def snapshot_name(job_id: str) -> str:
    """The name of the server snapshot a backup job takes (the same on every retry)."""
    return f"csbs-{job_id}"


def change_tokens_of(state: dict[str, Any] | None) -> dict[str, set[str]]:
    """``{volume_id: {change tokens}}`` a backup job whose state is ``state`` holds: the tokens of its bases
    and the ``since``/``change_token`` of its snapshot's volumes (what housekeeping must keep)."""
    tokens: dict[str, set[str]] = {}
    state = state or {}
    for volume_id, base in (state.get("bases") or {}).items():
        if isinstance(base, dict) and base.get("token"):
            tokens.setdefault(volume_id, set()).add(base["token"])
    for volume in ((state.get("snapshot") or {}).get("volumes") or []):
        for key in ("since", "change_token"):
            if volume.get(key):
                tokens.setdefault(volume["volume_id"], set()).add(volume[key])
    return tokens


def run_backup(runtime: Runtime, job: JobHandle) -> None:
    """Run a backup job from its current step to the end (each step moves ``job.step`` to a later one)."""
    for step, run in STEPS.items():
        if job.step == step:
            run(runtime, job)


def _snapshot(runtime: Runtime, job: JobHandle) -> None:
    """Step ``start``: choose the bases and snapshot all disks → ``copy``."""
    with runtime.sessions() as session:
        item = load_item(session, job.target_id)
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
    snapshot = data_path(runtime.driver).snapshot_server(cloud_context(job), server_id, snapshot_name(job.id),
                                              since=since or None)
    by_volume = {v.volume_id: v for v in snapshot.volumes}
    missing = [vid for _, vid in vbs if vid not in by_volume]
    if missing:
        data_path(runtime.driver).delete_snapshot(snapshot, keep_change_token=False)
        raise CSBSError(codes.INTERNAL_ERROR, message=f"volume(s) {','.join(missing)} were detached during the backup")

    def apply(session: Session) -> None:
        item = load_item(session, job.target_id)
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


class StoredBytes:
    """The bytes (after compression/encryption) the running attempt of a backup job (claim ``job.claim``) wrote
    to the bank for the volume backup ``vb_id``, and what the earlier attempts wrote for it, from the job's state
    ``stored`` ``{volume_backup_id: {claim: bytes}}`` (see the module's text).

    Called with a bank call's ``stored_bytes`` so far (``on_stored`` of :meth:`VolumeStore.backup_volume
    <opencsbs.bank.face.VolumeStore.backup_volume>`); :meth:`end_call` after each call, ended or cut short (an
    incremental copy that falls back to a full one makes two). :meth:`save` persists the attempt's figure in a
    progress report's transaction, :meth:`save_now` in one of its own (a give-back), :meth:`state` with the
    disk's commit.
    """

    def __init__(self, job: JobHandle, vb_id: str):
        self.job = job
        self.vb_id = vb_id
        self.key = str(job.claim)
        entries = ((job.state.get("stored") or {}).get(vb_id) or {})
        #: bytes of the earlier attempts, by claim
        self.earlier = {str(k): int(v) for k, v in entries.items() if str(k) != self.key}
        self.ended = int(entries.get(self.key, 0))  # this attempt's bank calls that ended
        self.running = 0  # the bank call under way
        self.saved = self.ended

    def __call__(self, stored_bytes: int) -> None:
        self.running = stored_bytes

    def end_call(self) -> None:
        """The bank call ended (returned or raised): its bytes join the attempt's."""
        self.ended += self.running
        self.running = 0

    @property
    def mine(self) -> int:
        """Bytes this attempt stored for the volume backup."""
        return self.ended + self.running

    @property
    def total(self) -> int:
        """Bytes every attempt stored for the volume backup: its ``stored_bytes``."""
        return sum(self.earlier.values()) + self.mine

    @property
    def unsaved(self) -> bool:
        """Whether this attempt stored bytes that are not persisted yet."""
        return self.mine != self.saved

    def state(self) -> dict[str, Any]:
        """The job state's ``stored`` with this attempt's figure for the volume backup."""
        stored = dict(self.job.state.get("stored") or {})
        stored[self.vb_id] = {**self.earlier, self.key: self.mine}
        return {"stored": stored}

    def save(self, session: Session) -> None:
        """Persist this attempt's figure in ``session``'s transaction, if the job is still ours."""
        mine = self.mine
        if self.job.save(session, self.state()):
            self.saved = mine

    def save_now(self) -> None:
        """Persist this attempt's figure in a transaction of its own, if the job is still ours (the attempt is
        giving the job back); a failure to do so is only logged (the figure then misses these bytes)."""
        if not self.unsaved:
            return
        try:
            with transaction(self.job.sessions) as session:
                self.save(session)
        except Exception:  # noqa: BLE001 - the give-back goes on; the bank's data is complete
            log.warning("job %s: bytes stored for volume backup %s not recorded", self.job.id, self.vb_id,
                        exc_info=True)


def _copy(runtime: Runtime, job: JobHandle) -> None:
    """Step ``copy``: each disk not yet available into the bank, one commit per disk → ``commit``. What this
    attempt stores is persisted with each progress write (:class:`StoredBytes`), also when the write would not
    change the percentage, and when a disk's chunks are all written; an attempt that gives the job back (lease
    lost, worker stopping, transient failure) persists its exact figure before it goes."""
    snapshot = ServerSnapshot.from_dict(job.state["snapshot"])
    bases = job.state.get("bases") or {}
    with runtime.sessions() as session:
        item = load_item(session, job.target_id)
        checkpoint_id = item.checkpoint_id
        todo = [(vb.id, vb.source_volume_id, vb.status) for vb in item.volume_backups]
    total = sum(snapshot.volume(vid).size for _, vid, _ in todo) or 1
    done_bytes = sum(snapshot.volume(vid).size for _, vid, st in todo if st == "available")
    stored: StoredBytes | None = None  # the disk being copied

    def write_progress(session: Session, percent: int) -> None:
        item = session.get(CheckpointItem, job.target_id)
        if item is not None and item.status == "protecting":
            item.progress = min(percent, 99)
        if stored is not None and stored.unsaved:
            stored.save(session)

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
        stored = StoredBytes(job, vb_id)

        def on_progress(done: int, size: int, _offset=done_bytes, _stored=stored) -> None:
            # every chunk of the disk written: persist the figure before the bank syncs and writes the index
            progress(100 * (_offset + done) / total, force=done >= size and _stored.unsaved, news=_stored.unsaved)

        started = time.monotonic()
        try:
            stats, used_base = _copy_volume(data_path(runtime.driver), runtime.bank, vsnap, name, base_index,
                                            changed, on_progress, runtime.settings.engine.read_limit_mib_s,
                                            stored)
        except Exception:  # given back or failing: what this attempt stored counts when the job is resumed
            stored.save_now()
            raise
        seconds = max(time.monotonic() - started, 1e-6)
        done_bytes += vsnap.size

        def apply(session: Session, vb_id=vb_id, stats=stats, seconds=seconds, name=name,
                  used_base=used_base, stored_bytes=stored.total) -> None:
            vb = session.get(VolumeBackup, vb_id)
            vb.status = "available"
            vb.index_name = name
            vb.read_bytes = int(getattr(stats, "read_bytes", 0))
            vb.stored_bytes = stored_bytes  # every attempt's, not only this one's (the stats' own)
            vb.chunk_count = int(getattr(stats, "chunk_count", 0))
            vb.seconds = seconds
            vb.average_speed = speed_kb(vb.size_bytes, seconds)
            vb.finished_at = utcnow()
            if not used_base:
                vb.incremental = False
                vb.base_index = None

        job.commit("copy", stored.state(), apply)
        stored = None
    job.commit("commit")


def _copy_volume(driver: DataPath, bank: VolumeStore, vsnap: VolumeSnapshot, name: str,
                 base_index: str | None, changed: Sequence[Range] | None,
                 on_progress: Callable[[int, int], None],
                 read_limit_mib_s: float = 0.0, stored: StoredBytes | None = None) -> tuple[IndexStats, bool]:
    """Copy one disk snapshot into the bank, reading at most ``read_limit_mib_s`` MiB/s (0: unlimited,
    engine/pacing.py); returns ``(IndexStats, whether base_index was used)``; ``stored`` (bytes written to the
    bank) follows every bank call, so a full copy after a failed incremental one counts what both wrote. Raises
    :class:`~opencsbs.engine.jobs.Retry` when a chunk vanished under a full copy (docs/bank.md), and
    :class:`~opencsbs.bank.errors.BankUnavailable` (transient) as it comes: an unreachable bank never turns an
    incremental copy into a full re-read."""
    reader = paced(driver.open_snapshot(vsnap), read_limit_mib_s)

    def backup(base: str | None, ranges: list[Range] | None) -> IndexStats:
        try:
            return bank.backup_volume(reader, index_name=name, base_index=base, changed_ranges=ranges,
                                      progress=on_progress, on_stored=stored)
        finally:
            if stored is not None:
                stored.end_call()

    try:
        try:
            stats = backup(base_index, list(changed) if changed is not None else None)
            return stats, base_index is not None
        except (LeaseLost, CSBSError, BankUnavailable):  # the bank being away is no reason to read everything
            raise
        except Exception as exc:
            if base_index is None:
                if isinstance(exc, ChunkMissing):  # a chunk vanished (docs/bank.md): copy this disk again later
                    raise Retry(str(exc)) from exc
                raise
            # The base may have been deleted meanwhile: read the whole disk instead.
            log.warning("incremental copy of %s from %s failed; reading the whole disk", name, base_index,
                        exc_info=True)
            stats = backup(None, None)
            return stats, False
    finally:
        reader.close()


def _retain(runtime: Runtime, job: JobHandle) -> None:
    """The storage's retention (S3 Object Lock) on the backup's indexes and chunks, from the locks that keep it;
    nothing where the bank's store enforces none or no lock covers the backup. Idempotent (a retry re-applies)."""
    store = getattr(runtime.bank, "store", None)
    if not getattr(store, "enforces_retention", False):
        return
    with runtime.sessions() as session:
        item = load_item(session, job.target_id)
        locks, _holds = lock_facts(session, item.project_id)
        keep = storage_retention(rule_backup(item), locks, utcnow())
        names = [vb.index_name for vb in item.volume_backups if vb.index_name]
    if keep is None:
        return
    for name in names:
        n = runtime.bank.retain_index(name, *keep)
        log.info("backup %s: %d objects of index %s retained by the storage (%s until %s)", job.target_id, n,
                 name, keep[0], keep[1])


def _commit(runtime: Runtime, job: JobHandle) -> None:
    """Step ``commit``: the storage's retention where the bank has S3 Object Lock (:func:`_retain`), then the
    item (and its checkpoint) ``available`` with figures, lock released → ``cleanup``."""
    _retain(runtime, job)

    def apply(session: Session) -> None:
        item = load_item(session, job.target_id)
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
        release_lock(session, item.resource_id, job.id)

    job.commit("cleanup", None, apply)


def _cleanup(runtime: Runtime, job: JobHandle) -> None:
    """Step ``cleanup``: the backup's catalog record into the bank, drop the snapshot (its change tokens stay)
    → done."""
    save_record_quietly(runtime, runtime.bank, job.target_id)
    snap = job.state.get("snapshot")
    if snap:
        data_path(runtime.driver).delete_snapshot(ServerSnapshot.from_dict(snap))
    job.commit("done", status="done")


# --- the failure path ---------------------------------------------------------------------------------------


def fail_backup(runtime: Runtime, job: JobHandle, error: CSBSError) -> None:
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
        fail_fields(item, error, "backup")
        item.finished_at = utcnow()
        for vb in item.volume_backups:
            vb.status = "error"
        checkpoint = session.get(Checkpoint, item.checkpoint_id)
        if checkpoint is not None and all(i.status in ("error", "deleted") or i.id == item.id
                                          for i in checkpoint.items):
            checkpoint.status = "error"
        release_lock(session, item.resource_id, job.id)

    if job.step != "abort":
        job.commit("abort", {"error": error.error_msg}, apply)
    _abort(runtime, job)


def _abort(runtime: Runtime, job: JobHandle) -> None:
    """Step ``abort`` of a failed backup: drop what it wrote to the bank and its snapshot, then end ``failed``."""
    with runtime.sessions() as session:
        item = session.get(CheckpointItem, job.target_id)
        names = [index_name(item.checkpoint_id, vb.id) for vb in item.volume_backups] if item else []
        server_id = item.resource_id if item else None
    for name in names:
        job.check()
        drop_index(runtime, name)
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


#: the backup's steps in the order they run: ``job.step`` → the function that runs it
STEPS: dict[str, Callable[[Runtime, JobHandle], None]] = {
    "start": _snapshot,
    "copy": _copy,
    "commit": _commit,
    "cleanup": _cleanup,
    "abort": _abort,
}
