"""The drill job (target: drill id): restore one backup onto scratch space, compare every byte with what the
bank recorded, time it, delete the scratch copy (docs/verify.md, "Restore drills").

Steps (:data:`STEPS`, run in this order; each ends with :meth:`~opencsbs.engine.jobs.JobHandle.commit`):

``start``    the drill ``running`` → ``restore``
``restore``  for each volume backup of the drilled backup: the bank restores it
             (:meth:`VolumeStore.restore_volume <opencsbs.bank.face.VolumeStore.restore_volume>`) onto scratch
             space, timed; the copy is read back and every chunk re-hashed against the index's addresses and the
             volume against its ``volume_hash`` (:func:`opencsbs.bank.verify.compare_restored`); the scratch copy
             is deleted whatever happens. The drill ends ``passed`` with its RTO (seconds of restore, all disks one
             after the other) or ``failed`` naming what differed; a failed drill marks the backup damaged as a
             verify job does → done

The scratch space is the cloud's own where the driver has some (:meth:`DataPath.open_scratch
<opencsbs.clouds.base.DataPath.open_scratch>`: OpenStack on Ceph RBD, a thin scratch RBD image in the volume's
pool, so the RTO includes writing to the cloud's storage), else a sparse file
``<data_dir>/drills/<drill id>/<volume backup id>.img`` on the opencsbs host (the sandbox, libvirt). No server or
cloud volume is touched. Each disk's entry in the drill's ``volumes`` names its ``scratch``. The job's state is
empty (the restore step is redone whole after a crash, replacing scratch images of the same name).
:func:`fail_drill` ends the drill ``error`` (the drill could not run) and removes its scratch copies.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from opencsbs.bank.errors import ChunkDamaged, ChunkMissing, IndexNotFound
from opencsbs.bank.verify import compare_restored
from opencsbs.blockio.files import FileBlockReader, FileBlockWriter
from opencsbs.clouds.base import DataPath, ScratchVolume
from opencsbs.core.blocks import BlockReader, BlockWriter
from opencsbs.core.errors import CSBSError
from opencsbs.core.timeutil import utcnow
from opencsbs.db.models import CheckpointItem, Drill, VolumeBackup
from opencsbs.engine.jobs import JobHandle
from opencsbs.engine.verify import check_row, checkable, mark_damaged
from opencsbs.runtime import Runtime

log = logging.getLogger("opencsbs.engine")


def run_drill(runtime: Runtime, job: JobHandle) -> None:
    """Run a drill job from its current step to the end."""
    for step, run in STEPS.items():
        if job.step == step:
            run(runtime, job)


def scratch_dir(runtime: Runtime, drill_id: str) -> Path:
    """Where drill ``drill_id`` restores: ``<data_dir>/drills/<drill_id>``."""
    return Path(runtime.settings.data_dir) / "drills" / drill_id


class FileScratch(ScratchVolume):
    """A sparse scratch file on the opencsbs host (drivers without scratch space of their own)."""

    def __init__(self, path: Path, size: int):
        self.path = path
        self.size = size
        self.where = f"file {path}"

    def writer(self) -> BlockWriter:
        return FileBlockWriter(self.path, self.size, direct=False)

    def reader(self) -> BlockReader:
        return FileBlockReader(self.path, self.size)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _driver_scratch(runtime: Runtime) -> DataPath | None:
    """The driver's data path when it offers scratch space of its own (it overrides ``open_scratch``)."""
    driver = runtime.driver
    if isinstance(driver, DataPath) and type(driver).open_scratch is not DataPath.open_scratch:
        return driver
    return None


def scratch_name(drill_id: str, vb_id: str) -> str:
    """The name of drill ``drill_id``'s scratch copy of volume backup ``vb_id``."""
    return f"{drill_id}-{vb_id}"


def _open_scratch(runtime: Runtime, where: Path, drill_id: str, vb_id: str, volume_id: str,
                  size: int) -> ScratchVolume:
    cloud = _driver_scratch(runtime)
    scratch = cloud.open_scratch(volume_id, size, scratch_name(drill_id, vb_id)) if cloud is not None else None
    if scratch is None:
        where.mkdir(parents=True, exist_ok=True)
        scratch = FileScratch(where / f"{vb_id}.img", size)
    return scratch


def _start(runtime: Runtime, job: JobHandle) -> None:
    """Step ``start``: the drill ``running`` → ``restore``."""

    def apply(session: Session) -> None:
        session.get(Drill, job.target_id).status = "running"

    job.commit("restore", None, apply)


def _restore(runtime: Runtime, job: JobHandle) -> None:
    """Step ``restore``: each disk onto scratch space, compared and timed; the scratch copy deleted → done."""
    with runtime.sessions() as session:
        drill = session.get(Drill, job.target_id)
        vbs = [(vb.id, vb.index_name, vb.source_volume_id) for vb in session.scalars(
            select(VolumeBackup).where(VolumeBackup.checkpoint_item_id == drill.checkpoint_item_id)
            .order_by(VolumeBackup.position, VolumeBackup.id))]
    bank = runtime.bank
    where = scratch_dir(runtime, job.target_id)
    volumes: list[dict] = []
    problems: list[str] = []
    rto = 0.0
    restored = 0
    try:
        for vb_id, name, volume_id in vbs:
            job.check()
            entry = {"volume_backup_id": vb_id, "result": "passed", "seconds": 0.0, "bytes": 0, "reason": "",
                     "scratch": ""}
            volumes.append(entry)
            if not name:
                entry.update(result="failed", reason="no bank index recorded")
                problems.append(f"volume backup {vb_id}: no bank index recorded")
                continue
            try:
                idx = bank.read_index(name)
            except (IndexNotFound, ChunkDamaged) as exc:
                entry.update(result="failed", reason=str(exc))
                problems.append(f"volume backup {vb_id}: {exc}")
                continue
            scratch = _open_scratch(runtime, where, job.target_id, vb_id, volume_id, idx.size)
            entry["scratch"] = scratch.where
            try:
                started = time.monotonic()
                try:
                    writer = scratch.writer()
                    try:
                        bank.restore_volume(name, writer, progress=lambda _d, _t: job.check())
                    finally:
                        writer.close()
                except (ChunkMissing, ChunkDamaged, IndexNotFound) as exc:
                    entry.update(result="failed", seconds=round(time.monotonic() - started, 3), reason=str(exc))
                    problems.append(f"volume backup {vb_id}: {exc}")
                    continue
                seconds = time.monotonic() - started
                rto += seconds
                reader = scratch.reader()
                try:
                    bad = compare_restored(bank, idx, reader.read)
                except (ChunkMissing, ChunkDamaged) as exc:
                    entry.update(result="failed", seconds=round(seconds, 3), reason=str(exc))
                    problems.append(f"volume backup {vb_id}: {exc}")
                    continue
                finally:
                    reader.close()
                entry.update(seconds=round(seconds, 3), bytes=idx.size)
                restored += idx.size
                if bad:
                    what = "volume hash" if bad == [-1] else f"chunk(s) {', '.join(map(str, bad[:10]))}"
                    entry.update(result="failed", reason=f"restored copy differs from the backup: {what}")
                    problems.append(f"volume backup {vb_id}: restored copy differs: {what}")
            finally:
                scratch.remove()
    finally:
        shutil.rmtree(where, ignore_errors=True)
    passed = not problems and bool(vbs)
    if not vbs:
        problems.append("the backup has no volume backups")
    now = utcnow()

    def apply(session: Session) -> None:
        drill = session.get(Drill, job.target_id)
        drill.status = "passed" if passed else "failed"
        drill.rto_seconds = round(rto, 3) if passed else None
        drill.bytes_restored = restored
        drill.volumes = volumes
        drill.message = (f"restored {restored} bytes in {rto:.3f} s, every chunk matches" if passed
                         else "; ".join(problems))
        drill.finished_at = now
        item = session.get(CheckpointItem, drill.checkpoint_item_id)
        if item is None:
            return
        row = check_row(session, item)
        row.last_drill_at = now
        row.drill_result = drill.status
        row.drill_id = drill.id
        if passed:
            row.last_good_drill_at = now
            row.drill_rto_seconds = drill.rto_seconds
        elif checkable(item):  # not a backup deleted while the drill read it
            mark_damaged(item, f"restore drill {drill.id}: " + "; ".join(problems))

    if not passed:
        log.warning("drill %s failed: %s", job.target_id, "; ".join(problems))
    job.commit("done", None, apply, status="done")


# --- the failure path ---------------------------------------------------------------------------------------


def fail_drill(runtime: Runtime, job: JobHandle, error: CSBSError) -> None:
    """End a drill job as failed: the drill reads ``error`` (it could not run); the scratch copies are deleted
    (the cloud's too: a crash may have left them)."""
    shutil.rmtree(scratch_dir(runtime, job.target_id), ignore_errors=True)
    cloud = _driver_scratch(runtime)
    if cloud is not None:
        with runtime.sessions() as session:
            drill = session.get(Drill, job.target_id)
            vbs = [] if drill is None else [(vb.id, vb.source_volume_id) for vb in session.scalars(
                select(VolumeBackup).where(VolumeBackup.checkpoint_item_id == drill.checkpoint_item_id))]
        for vb_id, volume_id in vbs:
            try:
                cloud.remove_scratch(volume_id, scratch_name(job.target_id, vb_id))
            except CSBSError as exc:  # the cloud cannot be reached: logged, the drill still ends
                log.warning("drill %s: scratch copy of %s not removed: %s", job.target_id, vb_id, exc.error_msg)

    def apply(session: Session) -> None:
        drill = session.get(Drill, job.target_id)
        if drill is None:
            return
        drill.status = "error"
        drill.message = error.error_msg
        drill.finished_at = utcnow()

    job.commit("failed", None, apply, status="failed", error=error.error_msg)


#: the drill's steps in the order they run: ``job.step`` → the function that runs it
STEPS: dict[str, Callable[[Runtime, JobHandle], None]] = {
    "start": _start,
    "restore": _restore,
}
