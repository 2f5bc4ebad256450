"""The restore job (target: restore id): a checkpoint_item's volume backups onto a server's disks, and its
failure path.

Steps (:data:`STEPS`, run in this order; each ends with :meth:`~opencsbs.engine.jobs.JobHandle.commit`):

``start``      check that every chunk of every disk backup is present and intact (:meth:`VolumeStore.check_volume
               <opencsbs.bank.face.VolumeStore.check_volume>`), before anything is touched → ``power_off``
``power_off``  mark the checkpoint_item ``restoring``, power the server off (``driver.power_off``) → ``write``
``write``      for each disk not yet written: bank index (:meth:`VolumeStore.restore_volume
               <opencsbs.bank.face.VolumeStore.restore_volume>`) → target volume (``driver.open_volume_writer``);
               one commit per disk → ``finish``
``finish``     power on if asked, restore ``success``, item back to ``available``, lock released → done

The job's state: ``{"was_running": bool, "written": [volume backup ids]}`` (and, in the running worker only,
``"partial"``: the disk being written and its bytes written so far). :func:`fail_restore` ends it ``failed``:
restore ``error`` with a reason that says per disk what was written and the server's power state (powered on
again when the user asked for ``power_on``), item back to ``available``, lock released. A cancelled restore
(:class:`~opencsbs.engine.jobs.JobCancelled`) stops before its next chunk write and ends the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy.orm import Session

from opencsbs.bank.errors import BankError, BankUnavailable
from opencsbs.bank.face import VolumeStore
from opencsbs.clouds.base import data_path
from opencsbs.core import codes
from opencsbs.core.errors import CSBSError
from opencsbs.core.timeutil import utcnow
from opencsbs.db.models import CheckpointItem, Restore, VolumeBackup
from opencsbs.engine._common import Progress, cloud_context, fail_fields, release_lock
from opencsbs.engine.jobs import JobHandle
from opencsbs.runtime import Runtime

log = logging.getLogger("opencsbs.engine")


def human_bytes(n: int) -> str:
    """``n`` bytes in binary units for people: ``"0 B"``, ``"512 B"``, ``"48.0 MiB"``, ``"1.0 GiB"``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def run_restore(runtime: Runtime, job: JobHandle) -> None:
    """Run a restore job from its current step to the end (each step moves ``job.step`` to a later one)."""
    for step, run in STEPS.items():
        if job.step == step:
            run(runtime, job)


def _mapping(runtime: Runtime, job: JobHandle) -> tuple[list[tuple[str, str]], dict[str, str], dict[str, int]]:
    """``([(backup_id, volume_id)], {backup_id: index name}, {backup_id: size in bytes, at least 1})``."""
    with runtime.sessions() as session:
        restore = session.get(Restore, job.target_id)
        mapping = [(v["backup_id"], v["volume_id"]) for v in restore.parameters["targets"]["volumes"]]
        names = {}
        sizes = {}
        for backup_id, _ in mapping:
            vb = session.get(VolumeBackup, backup_id)
            names[backup_id] = vb.index_name
            sizes[backup_id] = max(vb.size_bytes, 1)
    return mapping, names, sizes


def _check(runtime: Runtime, job: JobHandle) -> None:
    """Step ``start``: every chunk of every disk backup present and intact, nothing touched yet → ``power_off``.
    Raises CSBSError (CSBS.9999) naming the disk and the bank's finding: the restore then fails with nothing
    written and the server as it was; ``BankUnavailable`` as it comes (transient)."""
    mapping, names, _sizes = _mapping(runtime, job)
    bank: VolumeStore = runtime.bank
    for backup_id, volume_id in mapping:
        job.check()
        if not names[backup_id]:
            raise CSBSError(codes.INTERNAL_ERROR, message=f"restore refused: the backup of disk {volume_id} has "
                            "no data in the bank; nothing written, server left as it was")
        try:
            bank.check_volume(names[backup_id], progress=lambda _d, _t: job.check())
        except BankUnavailable:  # transient: the job is tried again later
            raise
        except BankError as exc:
            raise CSBSError(codes.INTERNAL_ERROR, message=f"restore refused: the backup of disk {volume_id} is "
                            f"not restorable ({exc}); nothing written, server left as it was") from exc
    job.commit("power_off")


def _prepare(runtime: Runtime, job: JobHandle) -> None:
    """Step ``power_off``: item ``restoring``, server powered off → ``write``."""
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
    """Step ``write``: each disk not yet written, from the bank onto its target volume → ``finish``. While a disk
    is written, ``job.state["partial"]`` holds ``{"volume_id", "bytes", "size"}`` for the failure path."""
    mapping, names, sizes = _mapping(runtime, job)
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
        partial = {"volume_id": volume_id, "bytes": 0, "size": sizes[backup_id]}
        job.state["partial"] = partial

        def on_progress(done: int, _total: int, _o=offset, _p=partial) -> None:
            _p["bytes"] = done
            progress(100 * (_o + done) / total)

        writer = data_path(runtime.driver).open_volume_writer(cloud_context(job), volume_id)
        try:
            bank: VolumeStore = runtime.bank
            bank.restore_volume(names[backup_id], writer, progress=on_progress)
            writer.flush()
        finally:
            writer.close()
        job.state.pop("partial", None)
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


def _written_report(runtime: Runtime, job: JobHandle) -> str:
    """Per disk what a failed restore wrote: ``"disk V1: written; disk V2: 48.0 MiB of 1.0 GiB written; disk V3:
    not written"``; ``"nothing written"`` when it failed before the ``write`` step."""
    if job.step not in ("write", "finish"):
        return "nothing written"
    mapping, _names, sizes = _mapping(runtime, job)
    written = set(job.state.get("written") or [])
    partial = job.state.get("partial") or {}
    parts = []
    for backup_id, volume_id in mapping:
        if backup_id in written:
            parts.append(f"disk {volume_id}: written")
        elif partial.get("volume_id") == volume_id and partial.get("bytes"):
            parts.append(f"disk {volume_id}: {human_bytes(partial['bytes'])} of {human_bytes(sizes[backup_id])} "
                         "written")
        else:
            parts.append(f"disk {volume_id}: not written")
    return "; ".join(parts)


def _power_after_failure(runtime: Runtime, job: JobHandle, server_id: str, power_on: bool) -> str:
    """Leave the server powered as the user asked (``power_on``) after a failed restore; what was done, in words.
    Nothing is done before the ``write`` step (the server was not touched)."""
    if job.step not in ("write", "finish"):
        return "server left as it was"
    if not power_on:
        return "server left powered off (power_on was not asked)"
    try:
        data_path(runtime.driver).power_on(cloud_context(job), server_id)
    except Exception as exc:  # the restore fails anyway; say what state the server is in
        log.warning("restore %s: could not power server %s on", job.target_id, server_id, exc_info=True)
        return f"server left powered off (powering it on failed: {exc})"
    return "server powered on as asked"


def fail_restore(runtime: Runtime, job: JobHandle, error: CSBSError) -> None:
    """End a restore job as failed: restore ``error`` with a reason in one line (the error, then per disk what
    was written, then the server's power state, which is what the user asked for), item back to ``available``."""
    with runtime.sessions() as session:
        restore = session.get(Restore, job.target_id)
        target = (restore.target_server_id, bool((restore.parameters or {}).get("power_on"))) if restore else None
    reason = error.error_msg
    if target is not None and not reason.startswith("restore refused"):  # a refusal says nothing was touched
        reason = f"{reason}; {_written_report(runtime, job)}; {_power_after_failure(runtime, job, *target)}"

    def apply(session: Session) -> None:
        restore = session.get(Restore, job.target_id)
        if restore is None:
            return
        restore.status = "error"
        restore.finished_at = utcnow()
        restore.resources_status = {restore.target_server_id: "error"}
        restore.resources_reason = {restore.target_server_id: reason}
        item = session.get(CheckpointItem, restore.checkpoint_item_id)
        if item is not None:
            if item.status in ("waiting_restore", "restoring"):
                item.status = "available"
            fail_fields(item, CSBSError(codes.lookup(error.error_code), message=reason), "restore")
        release_lock(session, restore.target_server_id, job.id)

    job.state.pop("partial", None)
    job.commit("failed", None, apply, status="failed", error=reason)


#: the restore's steps in the order they run: ``job.step`` → the function that runs it
STEPS: dict[str, Callable[[Runtime, JobHandle], None]] = {
    "start": _check,
    "power_off": _prepare,
    "write": _write,
    "finish": _finish,
}
