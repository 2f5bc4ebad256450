"""Workers: claim jobs, keep their leases alive, run their steps, fail them cleanly.

- :class:`Worker` runs one job at a time; :meth:`Worker.run_forever` until stopped, or :meth:`Worker.run_one`.
- :class:`WorkerPool` runs ``n`` workers as threads (inside ``opencsbs serve``, or ``opencsbs worker``).
- :func:`drain` runs every runnable job in the calling thread (tests).
- :class:`Worker` with ``target_id`` runs only the jobs of that backup or restore (``opencsbs backup --wait``).

A job claimed for more than ``engine.max_attempts`` times (its workers kept dying) is failed instead of run.

How workers are seen: a worker running :meth:`Worker.run_forever` (``serve``'s and ``opencsbs worker``'s) upserts
its row in the ``workers`` table (name, ``seen_at``, host, capabilities, current job) every ``SEEN_EVERY`` seconds
(a third of the lease when that is shorter), idle or busy, and deletes it when it stops; :func:`workers_seen` counts
the rows younger than ``SEEN_RECENT`` seconds (the CLI warns when there is none); a row older than the lease reads
``silent`` (engine/placement.py).

Placement: a worker claims only the jobs its capabilities serve (engine/placement.py ``worker_capabilities``,
core/placement.py). Idle workers wait for a wake-up (a job enqueued in this process, or, on PostgreSQL, a
``NOTIFY`` that :class:`JobListener` receives on its own ``LISTEN`` connection) or for ``engine.poll_seconds``,
whichever comes first.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from datetime import timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from opencsbs.core import codes
from opencsbs.core.errors import CSBSError
from opencsbs.core.timeutil import utcnow
from opencsbs.db.base import transaction
from opencsbs.db.models import WorkerSeen
from opencsbs.engine.jobs import CHANNEL, JobHandle, LeaseLost, Wakeup, add_wakeup, claim_next
from opencsbs.engine.kinds import FAILERS, RUNNERS, TRANSIENT, Failer
from opencsbs.engine.placement import worker_capabilities
from opencsbs.logs import job_scope
from opencsbs.runtime import Runtime

log = logging.getLogger("opencsbs.engine")

#: seconds between two heartbeat rows of an idle or busy worker
SEEN_EVERY = 10.0
#: a worker whose row is older than this (seconds) is not counted as running
SEEN_RECENT = 60.0


_KEEP = object()


def mark_seen(sessions: sessionmaker[Session], name: str, *, host: str | None = None,
              capabilities: list[str] | None = None, current_job=_KEEP) -> None:
    """Upsert the heartbeat row of worker ``name`` (``seen_at`` = now, UTC), with its ``host`` and
    ``capabilities`` when given and its ``current_job`` (a job id, or None when idle) unless left out."""
    values: dict = {"seen_at": utcnow()}
    if host is not None:
        values["host"] = host
    if capabilities is not None:
        values["capabilities"] = capabilities
    if current_job is not _KEEP:
        values["current_job"] = current_job
    with transaction(sessions) as session:
        if session.execute(update(WorkerSeen).where(WorkerSeen.name == name).values(**values)).rowcount != 1:
            session.add(WorkerSeen(name=name, started_at=utcnow(), **{"host": "", **values}))


def forget_seen(sessions: sessionmaker[Session], name: str) -> None:
    """Drop the heartbeat row of worker ``name`` (it stops)."""
    with transaction(sessions) as session:
        session.execute(delete(WorkerSeen).where(WorkerSeen.name == name))


def workers_seen(sessions: sessionmaker[Session], within: float = SEEN_RECENT) -> int:
    """How many workers wrote their heartbeat row in the last ``within`` seconds."""
    with sessions() as session:
        return int(session.execute(select(func.count()).select_from(WorkerSeen)
                                   .where(WorkerSeen.seen_at >= utcnow() - timedelta(seconds=within))).scalar())


def worker_name(prefix: str = "worker") -> str:
    """A name unique to this process and worker: host, pid and a random suffix."""
    return f"{prefix}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    """Claims and runs jobs of ``runtime`` (which must have a bank and a driver); with ``target_id`` only the jobs
    of that checkpoint_item or restore."""

    def __init__(self, runtime: Runtime, name: str | None = None, stop: threading.Event | None = None,
                 target_id: str | None = None, capabilities: list[str] | None = None,
                 wakeup: Wakeup | None = None):
        self.runtime = runtime
        self.name = name or worker_name()
        self.stop = stop or threading.Event()
        self.target_id = target_id
        #: what this worker serves (placement); default: this process's (engine/placement.py)
        self.capabilities = worker_capabilities(runtime) if capabilities is None else sorted(set(capabilities))
        self.host = runtime.settings.worker.host_name
        self.wakeup = wakeup or add_wakeup(Wakeup())
        self.current: JobHandle | None = None
        self.seen = 0.0  # monotonic time of the last heartbeat row; stays 0 outside run_forever

    @property
    def _engine(self):
        return self.runtime.settings.engine

    @property
    def seen_every(self) -> float:
        """Seconds between two heartbeat rows: ``SEEN_EVERY``, or a third of the lease when shorter."""
        return max(min(SEEN_EVERY, self._engine.lease_seconds / 3), 0.05)

    def run_forever(self) -> None:
        """Run jobs until :attr:`stop` is set, keeping this worker's heartbeat row (see the module's text)."""
        while not self.stop.is_set():
            generation = self.wakeup.generation()
            try:
                if self.target_id is None:  # the CLI's --wait worker is not a service's worker
                    self._mark_seen(force=True)
                worked = self.run_one()
            except Exception:  # keep the worker alive across database hiccups
                log.exception("worker %s: unexpected error", self.name)
                worked = False
            if not worked:
                self._idle(generation)
        try:
            if self.seen:
                forget_seen(self.runtime.sessions, self.name)
        except Exception:
            log.warning("worker %s: heartbeat row not dropped", self.name, exc_info=True)

    def _idle(self, generation: int) -> None:
        """Wait for a wake-up after ``generation`` or ``engine.poll_seconds``, writing the heartbeat row on time."""
        deadline = time.monotonic() + self._engine.poll_seconds
        while not self.stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self.wakeup.wait(generation, min(left, self.seen_every)):
                return
            try:
                self._mark_seen()
            except Exception:
                log.warning("worker %s: heartbeat row not written", self.name, exc_info=True)

    def run_one(self) -> bool:
        """Claim and run one job this worker can serve; False when there was none."""
        job = claim_next(self.runtime.sessions, self.name, self._engine.lease_seconds, target_id=self.target_id,
                         capabilities=self.capabilities)
        if job is None:
            return False
        self.current = job
        if self.seen:
            self._write_seen(current_job=job.id)
        beat_stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job, beat_stop), daemon=True,
                                name=f"heartbeat-{job.id[:8]}")
        beat.start()
        try:
            with job_scope(self.runtime, job):  # the job's id on every line, its start and end at INFO
                self._run(job)
        finally:
            beat_stop.set()
            beat.join()
            self.current = None
            if self.seen:
                try:
                    self._write_seen(current_job=None)
                except Exception:
                    log.warning("worker %s: heartbeat row not written", self.name, exc_info=True)
        return True

    def _mark_seen(self, force: bool = False) -> None:
        if (force or self.seen) and time.monotonic() - self.seen >= self.seen_every:
            self._write_seen()

    def _write_seen(self, **current_job) -> None:
        # host and capabilities every time: a row deleted meanwhile (housekeeping) comes back whole
        mark_seen(self.runtime.sessions, self.name, host=self.host, capabilities=self.capabilities, **current_job)
        self.seen = time.monotonic()

    def _heartbeat(self, job: JobHandle, done: threading.Event) -> None:
        interval = max(self._engine.lease_seconds / 3, 0.05)
        while not done.wait(interval):
            if self.stop.is_set():
                job.lost.set()
                return
            try:
                if not job.heartbeat():
                    return
                self._mark_seen()
            except Exception:
                log.warning("heartbeat of job %s failed", job.id, exc_info=True)

    def _run(self, job: JobHandle) -> None:
        runner = RUNNERS.get(job.kind)
        failer = FAILERS.get(job.kind)
        if runner is None or failer is None:
            log.error("job %s has unknown kind %s", job.id, job.kind)
            return
        try:
            if job.attempts > self._engine.max_attempts:
                raise CSBSError(codes.INTERNAL_ERROR,
                                message=f"{job.kind} interrupted {job.attempts - 1} times; given up")
            job.check()  # a job cancelled before it ran goes straight to its failure path
            runner(self.runtime, job)
        except LeaseLost:
            if self.stop.is_set():
                try:
                    job.release()
                except Exception:
                    log.warning("could not release job %s", job.id, exc_info=True)
            log.info("job %s: lease lost or worker stopping; left for another worker", job.id)
        except TRANSIENT as exc:
            log.warning("job %s (%s, step %s): transient failure, retried later: %s", job.id, job.kind,
                        job.step, exc)
            if job.attempts >= self._engine.max_attempts:
                self._fail(job, failer, exc if isinstance(exc, CSBSError) else
                           CSBSError(codes.INTERNAL_ERROR, message=str(exc)))
        except CSBSError as exc:
            log.warning("job %s (%s, step %s) failed: %s", job.id, job.kind, job.step, exc)
            self._fail(job, failer, exc)
        except Exception as exc:
            log.exception("job %s (%s, step %s) failed", job.id, job.kind, job.step)
            self._fail(job, failer, CSBSError(codes.INTERNAL_ERROR, message=f"{job.kind} failed: {exc}"))

    def _fail(self, job: JobHandle, failer: Failer, error: CSBSError) -> None:
        try:
            failer(self.runtime, job, error)
        except LeaseLost:
            log.info("job %s: lease lost while failing it", job.id)


class JobListener:
    """PostgreSQL ``LISTEN opencsbs_jobs`` on a connection of its own (psycopg, autocommit) in a thread: each
    notification (a job enqueued and committed, by any process) rings ``wakeup``. On a lost connection it rings
    once (a notification may have been missed) and reconnects after ``retry`` seconds; polling covers the gap."""

    def __init__(self, engine: Engine, wakeup: Wakeup, stop: threading.Event, retry: float = 2.0):
        self.conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.wakeup = wakeup
        self.stop_event = stop
        self.retry = retry
        self.listening = threading.Event()  #: set while LISTEN is in force
        self.thread = threading.Thread(target=self._run, name="job-listener", daemon=True)

    def start(self) -> JobListener:
        self.thread.start()
        return self

    def _run(self) -> None:
        import psycopg

        while not self.stop_event.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    self.wakeup.ring()  # jobs enqueued before LISTEN took effect
                    while not self.stop_event.is_set():
                        for _ in conn.notifies(timeout=0.5, stop_after=1):
                            self.wakeup.ring()
            except Exception as exc:
                if self.stop_event.is_set():
                    break
                log.warning("job listener: %s; reconnecting in %g s (polling meanwhile)", exc, self.retry)
            finally:
                self.listening.clear()
            self.wakeup.ring()
            self.stop_event.wait(self.retry)


class WorkerPool:
    """``n`` worker threads sharing one runtime, one :class:`~opencsbs.engine.jobs.Wakeup` and, on PostgreSQL,
    one :class:`JobListener`. :meth:`stop` asks them to finish (a running step is aborted at its next progress
    report and the job given back) and waits."""

    def __init__(self, runtime: Runtime, n: int, prefix: str = "worker"):
        self.stop_event = threading.Event()
        self.wakeup = add_wakeup(Wakeup())
        capabilities = worker_capabilities(runtime)
        self.workers = [Worker(runtime, worker_name(prefix), self.stop_event, capabilities=capabilities,
                               wakeup=self.wakeup) for _ in range(n)]
        self.threads: list[threading.Thread] = []
        self.listener = (JobListener(runtime.engine, self.wakeup, self.stop_event)
                         if runtime.engine.dialect.name == "postgresql" else None)

    def start(self) -> WorkerPool:
        if self.listener is not None:
            self.listener.start()
        for w in self.workers:
            t = threading.Thread(target=w.run_forever, name=w.name, daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.stop_event.set()
        self.wakeup.ring()
        for w in self.workers:
            if w.current is not None:
                w.current.lost.set()
        for t in self.threads:
            t.join(timeout)
        if self.listener is not None:
            self.listener.thread.join(timeout)


def drain(runtime: Runtime, max_jobs: int = 1000) -> int:
    """Run runnable jobs in this thread until none is left (or ``max_jobs``); returns how many ran."""
    worker = Worker(runtime, worker_name("drain"))
    ran = 0
    while ran < max_jobs and worker.run_one():
        ran += 1
    return ran
