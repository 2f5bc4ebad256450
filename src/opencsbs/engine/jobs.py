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

Placement (core/placement.py): a job carries ``needs`` (set at :func:`enqueue` by the use case, e.g. the libvirt
host of the domain) and :func:`claim_next` given a worker's ``capabilities`` only claims jobs whose every need
they offer; the match is part of the claim query's SQL (a correlated ``NOT EXISTS`` over the job's JSON needs:
SQLite ``json_each``, PostgreSQL ``json_array_elements_text``), so ``SKIP LOCKED`` and the compare-and-swap work
as before and a worker never even reads a job it cannot run.

Waking workers: :func:`enqueue` asks, in the enqueuing transaction, that idle workers be woken when it commits:
PostgreSQL ``NOTIFY opencsbs_jobs`` (delivered at commit to every process that LISTENs, engine/worker.py), and in
every database the :class:`Wakeup` objects of the same process (:func:`add_wakeup`). Workers keep polling every
``engine.poll_seconds`` as the fallback.

Every step ends with :meth:`JobHandle.commit`, which writes the next step, the job's state and the step's domain
changes (e.g. "this volume backup is available") in one transaction, and only if the lease is still ours: a
worker that lost its job can never overwrite the new owner's progress.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, event, exists, func, literal, or_, select, true, update
from sqlalchemy.orm import Session, sessionmaker

from opencsbs.core import codes
from opencsbs.core.errors import CSBSError
from opencsbs.core.placement import split
from opencsbs.core.timeutil import utcnow
from opencsbs.db.base import new_id, transaction
from opencsbs.db.models import Job

RUNNABLE = ("pending", "running")

#: the PostgreSQL channel a new job is announced on (its payload: the job's kind)
CHANNEL = "opencsbs_jobs"


class Wakeup:
    """Wakes idle workers of this process: :meth:`ring` (a job was enqueued and committed, or the pool stops) and
    :meth:`wait` for a ring newer than a :meth:`generation` read before looking for work (so a ring between the
    look and the wait is never missed)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0

    def generation(self) -> int:
        """The number of rings so far."""
        return self._generation

    def ring(self) -> None:
        """Wake every waiter."""
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def wait(self, seen: int, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for a ring after generation ``seen``; whether one came."""
        with self._cond:
            return self._cond.wait_for(lambda: self._generation != seen, max(timeout, 0.0))


_WAKEUPS: weakref.WeakSet[Wakeup] = weakref.WeakSet()


def add_wakeup(wakeup: Wakeup) -> Wakeup:
    """Ring ``wakeup`` whenever a job enqueued in this process commits (held weakly)."""
    _WAKEUPS.add(wakeup)
    return wakeup


def ring_local() -> None:
    """Ring every :class:`Wakeup` of this process."""
    for wakeup in list(_WAKEUPS):
        wakeup.ring()


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

    def save(self, session: Session, state: dict[str, Any]) -> bool:
        """Merge ``state`` into the job's persisted state in the caller's transaction (``session``), if we still
        own the job; the step and the lease stay as they are. Whether it was written (False: the job is no longer
        ours, nothing changed). For figures a later attempt needs, written with a progress report (the bytes a
        backup attempt stored so far, engine/backup.py)."""
        new_state = dict(self.state)
        new_state.update(state)
        res = session.execute(update(Job).where(self._owned()).values(state=new_state, updated_at=utcnow()))
        if res.rowcount != 1:
            return False
        self.state = new_state
        return True

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
            step: str = "start", state: dict[str, Any] | None = None, needs: Iterable[str] | None = None) -> Job:
    """Add a pending job in the caller's transaction (it becomes visible to workers when that commits, and idle
    workers are woken then: PostgreSQL NOTIFY, and this process's :class:`Wakeup` objects). ``needs``: what a
    worker must offer to run it (core/placement.py); none: any worker."""
    job = Job(id=new_id(), kind=kind, project_id=project_id, target_id=target_id, resource_id=resource_id,
              status="pending", step=step, state=state or {}, needs=sorted(set(needs or ())))
    session.add(job)
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_notify(CHANNEL, kind)))  # delivered when (and only if) this commits
    # a new function each time: SQLAlchemy keeps one registration per function, and a once-listener that has
    # fired would never fire again for a later transaction of the same session
    event.listen(session, "after_commit", lambda _session: ring_local(), once=True)
    return job


def servable_by(capabilities: Iterable[str], dialect: str):
    """The SQL condition "every need of the job is offered by ``capabilities``" (see the module's text): no
    element of ``jobs.needs`` is outside the exact capabilities and the kinds offered whole (``zone:*``)."""
    exact, kinds = split(capabilities)
    if dialect == "postgresql":
        elements = func.json_array_elements_text(Job.needs).table_valued("value").alias("need")
    else:
        elements = func.json_each(Job.needs).table_valued("value").alias("need")
    value = elements.c.value
    outside = [value.not_in(exact)] if exact else []
    outside += [~value.startswith(f"{kind}:", autoescape=True) for kind in kinds]
    return ~exists(select(literal(1)).select_from(elements).where(and_(true(), *outside)))


def request_cancel(session: Session, job_id: str, reason: str) -> bool:
    """Ask the runnable job ``job_id`` to stop (``reason``: "cancelled by <user>"), in the caller's transaction;
    False when the job has already ended (or does not exist). A second request keeps the first reason."""
    res = session.execute(update(Job).where(Job.id == job_id, Job.status.in_(RUNNABLE), Job.cancel_requested.is_(None))
                          .values(cancel_requested=reason))
    if res.rowcount == 1:
        return True
    return session.execute(select(Job.id).where(Job.id == job_id, Job.status.in_(RUNNABLE))).first() is not None


def claim_next(sessions: sessionmaker[Session], owner: str, lease_seconds: float,
               kinds: tuple[str, ...] | None = None, target_id: str | None = None,
               capabilities: Iterable[str] | None = None) -> JobHandle | None:
    """Claim the oldest runnable job (pending, or running with an expired lease: a silent worker's job), only of
    ``kinds``, only for ``target_id`` when given, and only one whose needs ``capabilities`` offer (None: any job);
    None when there is none."""
    now = utcnow()
    with sessions() as session:
        dialect = session.get_bind().dialect.name
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
        if capabilities is not None:
            query = query.where(servable_by(capabilities, dialect))
        postgres = dialect == "postgresql"
        if postgres:
            query = query.with_for_update(skip_locked=True, of=Job)
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
