"""The restore job (target: restore id): a checkpoint_item's volume backups onto a server's disks, and its
failure path.

Steps (:data:`STEPS`, run in this order; each ends with :meth:`~opencsbs.engine.jobs.JobHandle.commit`):

``start``   mark the checkpoint_item ``restoring``, power the server off (``driver.power_off``) → ``write``
``write``   for each disk not yet written: bank index (:meth:`VolumeStore.restore_volume
            <opencsbs.bank.face.VolumeStore.restore_volume>`) → target volume (``driver.open_volume_writer``);
            one commit per disk → ``finish``
``finish``  power on if asked, restore ``success``, item back to ``available``, lock released → done

The job's state: ``{"was_running": bool, "written": [volume backup ids]}``. :func:`fail_restore` ends it
``failed``: restore ``error`` with the reason, item back to ``available``, lock released.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session

from opencsbs.bank.face import VolumeStore
from opencsbs.clouds.base import data_path
from opencsbs.core.errors import CSBSError
from opencsbs.core.timeutil import utcnow
from opencsbs.db.models import CheckpointItem, Restore, VolumeBackup
from opencsbs.engine._common import Progress, cloud_context, fail_fields, release_lock
from opencsbs.engine.jobs import JobHandle
from opencsbs.runtime import Runtime


def run_restore(runtime: Runtime, job: JobHandle) -> None:
    """Run a restore job from its current step to the end (each step moves ``job.step`` to a later one)."""
    for step, run in STEPS.items():
        if job.step == step:
            run(runtime, job)


def _prepare(runtime: Runtime, job: JobHandle) -> None:
    """Step ``start``: item ``restoring``, server powered off → ``write``."""
    with runtime.sessions() as session:
        restore = session.get(Restore, job.target_id)
        server_id = restore.target_server_id
    was_running = data_path(runtime.driver).power_off(cloud_context(job), server_id)

    def apply(session: Session) -> None:
        restore = session.get(Restore, job.target_id)
        item = session.get(CheckpointItem, restore.checkpoint_item_id)
        if item is not None:
            item.status = "restoring"
        restore.resources_status = {server_id: "restoring"}

    job.commit("write", {"was_running": was_running, "written": []}, apply)


def _write(runtime: Runtime, job: JobHandle) -> None:
    """Step ``write``: each disk not yet written, from the bank onto its target volume → ``finish``."""
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
        writer = data_path(runtime.driver).open_volume_writer(cloud_context(job), volume_id)
        try:
            bank: VolumeStore = runtime.bank
            bank.restore_volume(names[backup_id], writer,
                                progress=lambda d, _t, _o=offset: progress(100 * (_o + d) / total))
            writer.flush()
        finally:
            writer.close()
        written.append(backup_id)
        job.commit("write", {"written": list(written)})
    job.commit("finish")


def _finish(runtime: Runtime, job: JobHandle) -> None:
    """Step ``finish``: power on when asked, restore ``success``, item ``available``, lock released → done."""
    with runtime.sessions() as session:
        restore = session.get(Restore, job.target_id)
        power_on = bool(restore.parameters.get("power_on"))
        server_id = restore.target_server_id
    if power_on:
        data_path(runtime.driver).power_on(cloud_context(job), server_id)

    def apply(session: Session) -> None:
        restore = session.get(Restore, job.target_id)
        restore.status = "success"
        restore.progress = 100
        restore.finished_at = utcnow()
        restore.resources_status = {server_id: "available"}
        item = session.get(CheckpointItem, restore.checkpoint_item_id)
        if item is not None and item.status in ("waiting_restore", "restoring"):
            item.status = "available"
        release_lock(session, server_id, job.id)

    job.commit("done", None, apply, status="done")


# --- the failure path ---------------------------------------------------------------------------------------


def fail_restore(runtime: Runtime, job: JobHandle, error: CSBSError) -> None:
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
            fail_fields(item, error, "restore")
        release_lock(session, restore.target_server_id, job.id)

    job.commit("failed", None, apply, status="failed", error=error.error_msg)


#: the restore's steps in the order they run: ``job.step`` → the function that runs it
STEPS: dict[str, Callable[[Runtime, JobHandle], None]] = {
    "start": _prepare,
    "write": _write,
    "finish": _finish,
}
