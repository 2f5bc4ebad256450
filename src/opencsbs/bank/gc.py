"""Garbage collection of the bank: mark the chunks the indexes (and the base indexes of backups in flight)
reference, sweep the others once they are older than the cutoff; and the GC markers a backup reads to know
whether a collection overlapped it. The protocol is described in ``docs/bank.md``.

>>> report = collect_garbage(bank, grace_seconds=3600)
>>> report.deleted_chunks, report.freed_bytes
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from opencsbs.bank.backends import ObjectStore
from opencsbs.bank.errors import ChunkDamaged, IndexNotFound, ObjectNotFound
from opencsbs.bank.layout import (
    GC_MARKER_LEASE,
    GC_MARKER_RENEW,
    LEASE_CLOCK_SLACK,
    LEASE_MAX_AGE,
    SAFETY,
    TOUCH_AGE,
    utcnow_iso,
)

if TYPE_CHECKING:
    from opencsbs.bank.bank import Bank


@dataclass
class GCReport:
    """What a garbage collection did. ``cutoff``: POSIX time; unreferenced chunks written or renewed after it
    were kept (``kept_recent``). ``skipped_reason`` is set when the sweep was not run (unsafe)."""

    indexes: int = 0
    referenced_chunks: int = 0
    chunks_seen: int = 0
    deleted_chunks: int = 0
    freed_bytes: int = 0
    kept_recent: int = 0
    in_flight_backups: int = 0
    stale_leases: int = 0
    #: ``gc/running/*`` markers of killed GCs removed
    stale_gc_markers: int = 0
    #: bytes of the unreferenced chunks kept only for the grace period (or for a backup in flight): what the next
    #: GC after the cutoff frees
    reclaimable_bytes: int = 0
    temporary_removed: int = 0
    #: S3 Object Lock: unreferenced chunks whose retention the storage still enforces (hidden now, their data
    #: freed by the first GC after their retain-until), and the old object versions a GC removed once their
    #: retention had ended (``pruned_versions``, ``pruned_bytes``)
    retained_chunks: int = 0
    pruned_versions: int = 0
    pruned_bytes: int = 0
    cutoff: float = 0.0
    seconds: float = 0.0
    skipped_reason: str | None = None
    errors: list[str] = field(default_factory=list)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def gc_marker_stale(store: ObjectStore, key: str, mtime: float, now: float) -> bool:
    """Whether the GC marker ``key`` was left by a GC that no longer runs: not renewed for
    :data:`GC_MARKER_LEASE`, or its owner (``host``/``pid`` in the marker) is a dead process of this host."""
    if mtime < now - GC_MARKER_LEASE:
        return True
    try:
        doc = json.loads(store.get(key))
    except (ObjectNotFound, ValueError):
        return False
    return (doc.get("host") == socket.gethostname() and isinstance(doc.get("pid"), int)
            and not pid_alive(doc["pid"]))


def gc_overlapped(store: ObjectStore, since: float) -> bool:
    """Whether a garbage collection ran at some moment after ``since`` (backend time). A stale marker (a
    killed GC) counts only for backups that started before its last renewal + :data:`GC_MARKER_LEASE` (it
    may have deleted until then), not for ever."""
    now = time.time()
    for info in store.list("gc/"):
        if info.key.startswith("gc/running/"):
            if not gc_marker_stale(store, info.key, info.mtime, now) or since <= info.mtime + GC_MARKER_LEASE:
                return True
        if info.key == "gc/finished" and info.mtime >= since - 2.0:
            return True
    return False


def drop_stale_gc_markers(store: ObjectStore, report: GCReport) -> None:
    """Delete the ``gc/running/*`` markers of killed GCs (see :func:`gc_marker_stale`)."""
    now = time.time()
    for info in list(store.list("gc/running/")):
        if gc_marker_stale(store, info.key, info.mtime, now):
            store.delete(info.key)
            report.stale_gc_markers += 1


def gc_before_lease_running(store: ObjectStore, lease_time: float) -> bool:
    """Whether a garbage collection that may have read the leases before this backup's lease existed (its
    marker is not clearly newer than the lease) is still running."""
    now = time.time()
    for info in store.list("gc/running/"):
        if gc_marker_stale(store, info.key, info.mtime, now):
            continue
        if info.mtime <= lease_time + LEASE_CLOCK_SLACK:
            return True
        # a running GC renews its marker, so a newer mtime may hide an older start: read when it started
        try:
            doc = json.loads(store.get(info.key))
            begun = datetime.fromisoformat(doc["started_at"]).replace(tzinfo=UTC).timestamp()
        except (ObjectNotFound, ValueError, KeyError, TypeError):
            return True
        if begun <= lease_time + LEASE_CLOCK_SLACK:
            return True
    return False


def _live_leases(store: ObjectStore, report: GCReport) -> tuple[float | None, set[str]]:
    """Oldest start (backend time) of the backups in flight and the base indexes they build on. Leases
    of crashed backups (too old, or of a dead process on this host) are removed."""
    oldest: float | None = None
    bases: set[str] = set()
    host = socket.gethostname()
    now = time.time()
    for info in list(store.list("leases/")):
        try:
            doc = json.loads(store.get(info.key))
        except ObjectNotFound:
            continue  # the backup just finished
        except ValueError:
            doc = {}
        stale = info.mtime < now - LEASE_MAX_AGE or (
            doc.get("host") == host and isinstance(doc.get("pid"), int) and not pid_alive(doc["pid"]))
        if stale:
            report.stale_leases += 1
            store.delete(info.key)
            continue
        report.in_flight_backups += 1
        oldest = info.mtime if oldest is None else min(oldest, info.mtime)
        if doc.get("base_index"):
            bases.add(doc["base_index"])
    return oldest, bases


def collect_garbage(bank: Bank, grace_seconds: float = 3600.0) -> GCReport:
    """Mark and sweep: delete the chunks no index references.

    Safe against backups in flight (here or in other processes): a chunk is only deleted when no index
    references it, no backup in flight builds on an index that references it, and it was last written or
    renewed before the *cutoff* = min(GC start - ``grace_seconds``, start of the oldest backup in flight -
    1 h - 5 min); backups renew reused chunks older than 1 h. A backup that overlapped a GC re-checks its
    reused chunks before writing its index. If an index cannot be read, or a base index of a backup in
    flight has vanished, nothing is swept (``skipped_reason``). Details: ``docs/bank.md``.
    """
    started = time.monotonic()
    store = bank.store
    report = GCReport()
    drop_stale_gc_markers(store, report)
    marker = f"gc/running/{uuid.uuid4().hex}"
    marker_doc = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started_at": utcnow_iso(),
                             "lease_seconds": GC_MARKER_LEASE}).encode()
    store.put(marker, marker_doc, sync=False)
    renewed = time.monotonic()

    def renew() -> None:  # keeps the marker from looking stale while this GC runs
        nonlocal renewed
        if time.monotonic() - renewed >= GC_MARKER_RENEW:
            store.put(marker, marker_doc, sync=False)
            renewed = time.monotonic()

    try:
        info = store.head(marker)
        t0 = info.mtime if info else time.time()
        # order matters: leases first, then indexes (a backup ends by writing its index, then its lease goes)
        oldest, bases = _live_leases(store, report)
        marked: set[str] = set()
        for name in bank.list_indexes():
            renew()
            try:
                marked |= bank.read_index(name).addresses()
                report.indexes += 1
            except IndexNotFound:
                continue  # deleted meanwhile
            except ChunkDamaged as exc:
                report.errors.append(str(exc))
                report.skipped_reason = f"index {name} cannot be read"
        for name in bases:
            try:
                marked |= bank.read_index(name).addresses()
            except (IndexNotFound, ChunkDamaged):
                report.skipped_reason = f"base index {name} of a backup in flight is gone"
        report.referenced_chunks = len(marked)
        cutoff = t0 - max(0.0, grace_seconds)
        if oldest is not None:
            cutoff = min(cutoff, oldest - TOUCH_AGE - SAFETY)
        report.cutoff = cutoff
        if report.skipped_reason is None:
            _sweep(store, marked, cutoff, report, renew)
            report.temporary_removed = store.cleanup_temporary(min(cutoff, time.time() - SAFETY))
            if store.enforces_retention:
                report.pruned_versions, report.pruned_bytes = store.prune_versions()
    finally:
        store.put("gc/finished", json.dumps({
            "finished_at": utcnow_iso(), "deleted_chunks": report.deleted_chunks,
            "freed_bytes": report.freed_bytes, "reclaimable_bytes": report.reclaimable_bytes,
            "skipped_reason": report.skipped_reason}).encode(), sync=False)
        store.delete(marker)
    report.seconds = time.monotonic() - started
    return report


def _sweep(store: ObjectStore, marked: set[str], cutoff: float, report: GCReport,
           renew: Callable[[], None] = lambda: None) -> None:
    """Delete the chunks not in ``marked`` last written or renewed before ``cutoff`` (each re-checked with
    ``head`` just before), counting into ``report``; ``renew()`` is called once per chunk listed."""
    for info in store.list("chunks/"):
        renew()
        addr = info.key.rsplit("/", 1)[-1]
        report.chunks_seen += 1
        if addr in marked:
            continue
        if info.mtime >= cutoff:
            report.kept_recent += 1
            report.reclaimable_bytes += info.size
            continue
        fresh = store.head(info.key)  # renewed since it was listed?
        if fresh is None:
            continue
        if fresh.mtime >= cutoff:
            report.kept_recent += 1
            report.reclaimable_bytes += fresh.size
            continue
        if not store.delete_unless_retained(info.key):
            report.retained_chunks += 1  # hidden; the storage frees it when its retention ends
            continue
        report.deleted_chunks += 1
        report.freed_bytes += fresh.size

