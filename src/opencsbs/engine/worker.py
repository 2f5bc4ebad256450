"""Workers: claim jobs, keep their leases alive, run their steps, fail them cleanly.

- :class:`Worker` runs one job at a time; :meth:`Worker.run_forever` until stopped, or :meth:`Worker.run_one`.
- :class:`WorkerPool` runs ``n`` workers as threads (inside ``opencsbs serve``, or ``opencsbs worker``).
- :func:`drain` runs every runnable job in the calling thread (tests, ``opencsbs backup --wait`` without
  workers).

A job claimed for more than ``engine.max_attempts`` times (its workers kept dying) is failed instead of run.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

from opencsbs.core import codes
from opencsbs.core.errors import CSBSError
from opencsbs.engine.jobs import JobHandle, LeaseLost, claim_next
from opencsbs.engine.kinds import FAILERS, RUNNERS, TRANSIENT, Failer
from opencsbs.logs import job_scope
from opencsbs.runtime import Runtime

log = logging.getLogger("opencsbs.engine")


def worker_name(prefix: str = "worker") -> str:
    """A name unique to this process and worker: host, pid and a random suffix."""
    return f"{prefix}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    """Claims and runs jobs of ``runtime`` (which must have a bank and a driver)."""

    def __init__(self, runtime: Runtime, name: str | None = None, stop: threading.Event | None = None):
        self.runtime = runtime
        self.name = name or worker_name()
        self.stop = stop or threading.Event()
        self.current: JobHandle | None = None

    @property
    def _engine(self):
        return self.runtime.settings.engine

    def run_forever(self) -> None:
        """Run jobs until :attr:`stop` is set."""
        while not self.stop.is_set():
            try:
                worked = self.run_one()
            except Exception:  # keep the worker alive across database hiccups
                log.exception("worker %s: unexpected error", self.name)
                worked = False
            if not worked:
                self.stop.wait(self._engine.poll_seconds)

    def run_one(self) -> bool:
        """Claim and run one job; False when there was none."""
        job = claim_next(self.runtime.sessions, self.name, self._engine.lease_seconds)
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

    def _heartbeat(self, job: JobHandle, done: threading.Event) -> None:
        interval = max(self._engine.lease_seconds / 3, 0.05)
        while not done.wait(interval):
            if self.stop.is_set():
                job.lost.set()
                return
            try:
                if not job.heartbeat():
                    return
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
