"""Workers: claim jobs, keep their leases alive, run their steps, fail them cleanly.

- :class:`Worker` runs one job at a time; :meth:`Worker.run_forever` until stopped, or :meth:`Worker.run_one`.
- :class:`WorkerPool` runs ``n`` workers as threads (inside ``opencsbs serve``, or ``opencsbs worker``).
- :func:`drain` runs every runnable job in the calling thread (tests).
- :class:`Worker` with ``target_id`` runs only the jobs of that backup or restore (``opencsbs backup --wait``).

A job claimed for more than ``engine.max_attempts`` times (its workers kept dying) is failed instead of run.

How workers are seen: a worker running :meth:`Worker.run_forever` (``serve``'s and ``opencsbs worker``'s) upserts
its row in the ``workers`` table (name, ``seen_at``) every ``SEEN_EVERY`` seconds and deletes it when it stops;
:func:`workers_seen` counts the rows younger than ``SEEN_RECENT`` seconds (the CLI warns when there is none).
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
from sqlalchemy.orm import Session, sessionmaker

from opencsbs.core import codes
from opencsbs.core.errors import CSBSError
from opencsbs.core.timeutil import utcnow
from opencsbs.db.base import transaction
from opencsbs.db.models import WorkerSeen
from opencsbs.engine.jobs import JobHandle, LeaseLost, claim_next
from opencsbs.engine.kinds import FAILERS, RUNNERS, TRANSIENT, Failer
from opencsbs.logs import job_scope
from opencsbs.runtime import Runtime

log = logging.getLogger("opencsbs.engine")

#: seconds between two heartbeat rows of an idle or busy worker
SEEN_EVERY = 10.0
#: a worker whose row is older than this (seconds) is not counted as running
SEEN_RECENT = 60.0


def mark_seen(sessions: sessionmaker[Session], name: str) -> None:
    """Upsert the heartbeat row of worker ``name`` (``seen_at`` = now, UTC)."""
    with transaction(sessions) as session:
        if session.execute(update(WorkerSeen).where(WorkerSeen.name == name)
                           .values(seen_at=utcnow())).rowcount != 1:
            session.add(WorkerSeen(name=name, seen_at=utcnow()))


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
                 target_id: str | None = None):
        self.runtime = runtime
        self.name = name or worker_name()
        self.stop = stop or threading.Event()
        self.target_id = target_id
        self.current: JobHandle | None = None
        self.seen = 0.0  # monotonic time of the last heartbeat row; stays 0 outside run_forever

    @property
    def _engine(self):
        return self.runtime.settings.engine

    def run_forever(self) -> None:
        """Run jobs until :attr:`stop` is set, keeping this worker's heartbeat row (see the module's text)."""
        while not self.stop.is_set():
            try:
                if self.target_id is None:  # the CLI's --wait worker is not a service's worker
                    self._mark_seen(force=True)
                worked = self.run_one()
            except Exception:  # keep the worker alive across database hiccups
                log.exception("worker %s: unexpected error", self.name)
                worked = False
            if not worked:
                self.stop.wait(self._engine.poll_seconds)
        try:
            if self.seen:
                forget_seen(self.runtime.sessions, self.name)
        except Exception:
            log.warning("worker %s: heartbeat row not dropped", self.name, exc_info=True)

    def run_one(self) -> bool:
        """Claim and run one job; False when there was none."""
        job = claim_next(self.runtime.sessions, self.name, self._engine.lease_seconds, target_id=self.target_id)
        if job is None:
            return False
        self.current = job
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
        return True

    def _mark_seen(self, force: bool = False) -> None:
        if (force or self.seen) and time.monotonic() - self.seen >= SEEN_EVERY:
            mark_seen(self.runtime.sessions, self.name)
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


class WorkerPool:
    """``n`` worker threads sharing one runtime. :meth:`stop` asks them to finish (a running step is aborted at
    its next progress report and the job given back) and waits."""

    def __init__(self, runtime: Runtime, n: int, prefix: str = "worker"):
        self.stop_event = threading.Event()
        self.workers = [Worker(runtime, worker_name(prefix), self.stop_event) for _ in range(n)]
        self.threads: list[threading.Thread] = []

    def start(self) -> WorkerPool:
        for w in self.workers:
            t = threading.Thread(target=w.run_forever, name=w.name, daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.stop_event.set()
        for w in self.workers:
            if w.current is not None:
                w.current.lost.set()
        for t in self.threads:
            t.join(timeout)


def drain(runtime: Runtime, max_jobs: int = 1000) -> int:
    """Run runnable jobs in this thread until none is left (or ``max_jobs``); returns how many ran."""
    worker = Worker(runtime, worker_name("drain"))
    ran = 0
    while ran < max_jobs and worker.run_one():
        ran += 1
    return ran
