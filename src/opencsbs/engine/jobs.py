"""Durable jobs: claiming, leases, heartbeats and step commits, on SQLite and PostgreSQL.

A job row (``db.models.Job``) is owned by the worker whose ``owner``/``claim`` it carries while ``lease_until`` is
in the future. Claiming is a compare-and-swap on ``claim`` (``UPDATE ... WHERE id = :id AND claim = :seen``): of
several workers racing for one row exactly one sees ``rowcount == 1``. PostgreSQL additionally reads candidates
with ``FOR UPDATE SKIP LOCKED`` so racing workers pick different rows. A worker that dies stops renewing its lease;
once the lease has expired any worker claims the job again and resumes it at its persisted ``step``.

Cancelling (:func:`request_cancel`) writes who asked into the row's ``cancel_requested``; the worker running the job
reads it at each heartbeat, step commit and progress write (:meth:`JobHandle.see_cancel`), and the job's next
:meth:`JobHandle.check` raises :class:`JobCancelled` inside the running step, so the kind's failure path does the
clean-up. A job no worker holds is failed the same way by the first worker that claims it.

Every step ends with :meth:`JobHandle.commit`, which writes the next step, the job's state and the step's domain
changes (e.g. "this volume backup is available") in one transaction, and only if the lease is still ours: a
worker that lost its job can never overwrite the new owner's progress.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from opencsbs.core import codes
from opencsbs.core.errors import CSBSError
from opencsbs.core.timeutil import utcnow
from opencsbs.db.base import new_id, transaction
from opencsbs.db.models import Job

RUNNABLE = ("pending", "running")


class LeaseLost(Exception):
    """The job is no longer ours (lease expired and another worker claimed it, or we are stopping)."""


class Retry(Exception):
    """A transient failure: give the job back so it is tried again later (counts as an attempt)."""


class JobCancelled(CSBSError):
    """Someone asked to cancel the job (``reason``: "cancelled by <user>"); raised inside the running step, the
    job then ends through its kind's failure path with this reason (CSBS.9999)."""

    def __init__(self, reason: str):
        super().__init__(codes.INTERNAL_ERROR, message=reason)
        self.reason = reason


@dataclass
class JobHandle:
    """A claimed job: what the worker knows of it, and the means to commit steps and renew the lease."""

    sessions: sessionmaker[Session]
    id: str
    kind: str
    project_id: str
    target_id: str
    resource_id: str | None
    step: str
    state: dict[str, Any]
    attempts: int
    claim: int
    owner: str
    lease_seconds: float
    lost: threading.Event = field(default_factory=threading.Event)
    cancelled: str | None = None  #: "cancelled by <user>" once a cancel was seen
    cancel_raised: bool = False

    def _owned(self):
        return (Job.id == self.id) & (Job.claim == self.claim) & (Job.owner == self.owner)

    def check(self) -> None:
        """Raise :class:`LeaseLost` if the lease was lost or the worker is stopping, :class:`JobCancelled` (once)
        if a cancel was seen: the failure path that follows may call ``check`` again without being stopped."""
        if self.lost.is_set():
            raise LeaseLost(self.id)
        if self.cancelled and not self.cancel_raised:
            self.cancel_raised = True
            raise JobCancelled(self.cancelled)

    def see_cancel(self, session: Session) -> None:
        """Read the job row's ``cancel_requested`` in ``session`` (heartbeats, commits, progress writes)."""
        if self.cancelled is None:
            reason = session.execute(select(Job.cancel_requested).where(Job.id == self.id)).scalar()
            if reason:
                self.cancelled = reason

    def commit(self, step: str, state: dict[str, Any] | None = None,
               apply: Callable[[Session], None] | None = None, status: str = "running",
               error: str | None = None) -> None:
        """Persist the next ``step`` (and ``state`` changes) together with ``apply(session)``'s changes, in one
        transaction, if we still own the job; otherwise roll back and raise :class:`LeaseLost`."""
        self.check()
        new_state = dict(self.state)
        if state:
            new_state.update(state)
        now = utcnow()
        values: dict[str, Any] = {"step": step, "state": new_state, "status": status, "updated_at": now,
                                  "lease_until": now + timedelta(seconds=self.lease_seconds)}
        if status in ("done", "failed"):
            values.update(finished_at=now, lease_until=None, error=error)
        with transaction(self.sessions) as session:
            res = session.execute(update(Job).where(self._owned()).values(**values))
            if res.rowcount != 1:
                raise LeaseLost(self.id)
            if apply is not None:
                apply(session)
            self.see_cancel(session)
        self.step = step
        self.state = new_state

    def heartbeat(self) -> bool:
        """Extend the lease; False (and ``lost`` set) if the job is no longer ours."""
        with transaction(self.sessions) as session:
            res = session.execute(
                update(Job).where(self._owned()).values(lease_until=utcnow() + timedelta(seconds=self.lease_seconds))
            )
            ok = res.rowcount == 1
            if ok:
                self.see_cancel(session)
        if not ok:
            self.lost.set()
        return ok

    def release(self) -> None:
        """Give the job back without counting this attempt (graceful stop): another worker may take it now."""
        with transaction(self.sessions) as session:
            session.execute(
                update(Job).where(self._owned()).values(lease_until=None, owner=None, attempts=Job.attempts - 1)
            )


def enqueue(session: Session, kind: str, project_id: str, target_id: str, *, resource_id: str | None = None,
            step: str = "start", state: dict[str, Any] | None = None) -> Job:
    """Add a pending job in the caller's transaction (it becomes visible to workers when that commits)."""
    job = Job(id=new_id(), kind=kind, project_id=project_id, target_id=target_id, resource_id=resource_id,
              status="pending", step=step, state=state or {})
    session.add(job)
    return job


def request_cancel(session: Session, job_id: str, reason: str) -> bool:
    """Ask the runnable job ``job_id`` to stop (``reason``: "cancelled by <user>"), in the caller's transaction;
    False when the job has already ended (or does not exist). A second request keeps the first reason."""
    res = session.execute(update(Job).where(Job.id == job_id, Job.status.in_(RUNNABLE), Job.cancel_requested.is_(None))
                          .values(cancel_requested=reason))
    if res.rowcount == 1:
        return True
    return session.execute(select(Job.id).where(Job.id == job_id, Job.status.in_(RUNNABLE))).first() is not None


def claim_next(sessions: sessionmaker[Session], owner: str, lease_seconds: float,
               kinds: tuple[str, ...] | None = None, target_id: str | None = None) -> JobHandle | None:
    """Claim the oldest runnable job (pending, or running with an expired lease), only of ``kinds`` and only
    for ``target_id`` when given; None when there is none."""
    now = utcnow()
    with sessions() as session:
        query = (
            select(Job.id, Job.claim)
            .where(Job.status.in_(RUNNABLE), or_(Job.lease_until.is_(None), Job.lease_until < now))
            .order_by(Job.created_at, Job.id)
            .limit(8)
        )
        if kinds:
            query = query.where(Job.kind.in_(kinds))
        if target_id is not None:
            query = query.where(Job.target_id == target_id)
        postgres = session.get_bind().dialect.name == "postgresql"
        if postgres:
            query = query.with_for_update(skip_locked=True)
        candidates = session.execute(query).all()
        if not postgres:
            # SQLite: end the read transaction before writing, so the CAS below waits on the busy timeout
            # instead of failing on a stale read snapshot.
            session.rollback()
        for job_id, seen in candidates:
            res = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.claim == seen, Job.status.in_(RUNNABLE),
                       or_(Job.lease_until.is_(None), Job.lease_until < now))
                .values(claim=seen + 1, owner=owner, status="running", attempts=Job.attempts + 1,
                        lease_until=utcnow() + timedelta(seconds=lease_seconds), updated_at=utcnow())
            )
            if res.rowcount == 1:
                job = session.get(Job, job_id)
                session.commit()
                return JobHandle(sessions, job.id, job.kind, job.project_id, job.target_id, job.resource_id,
                                 job.step, dict(job.state or {}), job.attempts, job.claim, owner, lease_seconds,
                                 cancelled=job.cancel_requested)
            if not postgres:
                session.rollback()
        session.commit()
    return None
