"""Placement in a deployment: what this process's workers serve, what a server's jobs need, and whether a
waiting job has a live worker that can run it (the rules: core/placement.py; docs/engine.md "Placement").

- :func:`worker_capabilities`: ``host:<worker.host>``, ``driver:<cloud.driver>``, what the driver's data path
  serves (:meth:`~opencsbs.clouds.base.DataPath.placement_capabilities`, or ``worker.capabilities`` instead when
  set) and the zones (``worker.zones``, ``zone:*`` when empty).
- :func:`server_needs`: what a backup or restore of a server needs: ``driver:<name>``, the driver's
  :meth:`~opencsbs.clouds.base.Inventory.placement_needs` (the libvirt host of the domain, the sandbox host, the
  Ceph backends) and ``zone:<az>``.
- :func:`silent_after`: a worker whose heartbeat row is older than this is silent (the job lease: by then its
  job, if any, is claimable by another worker).
- :func:`waiting_reason`: why a runnable job waits for a worker, or None.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from opencsbs.clouds.base import DataPath
from opencsbs.core.facts import ServerFacts
from opencsbs.core.placement import need, unservable
from opencsbs.core.timeutil import utcnow
from opencsbs.db.models import Job, WorkerSeen
from opencsbs.runtime import Runtime


def worker_capabilities(runtime: Runtime) -> list[str]:
    """The capabilities this process's workers declare (sorted, no duplicates; see the module's text)."""
    settings = runtime.settings
    own = settings.worker
    if own.capabilities is not None:
        caps = list(own.capabilities)
    else:
        caps = [need("driver", runtime.driver.name)]
        if isinstance(runtime.driver, DataPath):
            caps += runtime.driver.placement_capabilities()
    caps.append(need("host", own.host_name))
    caps += [need("zone", z) for z in own.zones] or [need("zone", "*")]
    return sorted(dict.fromkeys(caps))


def server_needs(runtime: Runtime, server: ServerFacts) -> list[str]:
    """What a worker must offer to back up or restore ``server`` (see the module's text)."""
    needs = [need("driver", runtime.driver.name), *runtime.driver.placement_needs(server)]
    if server.availability_zone:
        needs.append(need("zone", server.availability_zone))
    return sorted(dict.fromkeys(needs))


def silent_after(runtime: Runtime) -> float:
    """Seconds after which a worker's heartbeat row reads silent: ``engine.lease_seconds`` (workers write it every
    third of that, at most every 10 s), the time after which a silent worker's job is claimed elsewhere."""
    return float(runtime.settings.engine.lease_seconds)


def live_workers(session: Session, runtime: Runtime) -> list[tuple[str, list[str] | None]]:
    """``(name, capabilities)`` of the workers seen within :func:`silent_after`."""
    since = utcnow() - timedelta(seconds=silent_after(runtime))
    rows = session.execute(select(WorkerSeen.name, WorkerSeen.capabilities).where(WorkerSeen.seen_at >= since))
    return [(name, caps) for name, caps in rows]


def waiting_reason(session: Session, runtime: Runtime, job: Job) -> str | None:
    """Why runnable ``job`` waits (one line): no live worker offers its needs; None when one does, or the job
    runs under a live lease, or has ended."""
    if job.status not in ("pending", "running"):
        return None
    if job.status == "running" and job.lease_until is not None and job.lease_until >= utcnow():
        return None
    return unservable(job.needs or [], live_workers(session, runtime), silent_after(runtime))
