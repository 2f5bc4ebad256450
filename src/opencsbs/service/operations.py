"""What the operations endpoints report (``GET /readyz``, ``GET /metrics``; docs/operations.md): the readiness of
the service's dependencies, and the job and backup figures of the database.

- :func:`readiness` asks the database, the bank and the cloud driver at once, each bounded in time;
- :func:`figures` reads the job and backup figures with a handful of aggregate queries (a whole scrape: 30 to
  150 ms for 10,000 jobs and 3,000 backups of 1,000 servers, on SQLite and PostgreSQL).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, text

from opencsbs.clouds.base import CloudContext
from opencsbs.core.timeutil import utcnow
from opencsbs.db.models import CheckpointItem, Job, Policy, PolicyResource, VolumeBackup
from opencsbs.runtime import Runtime

#: seconds one readiness check may take before it counts as not ready
CHECK_TIMEOUT = 5.0

_PASSWORD = re.compile(r"(//[^/:@\s]+):[^@/\s]+@")


def one_line(exc: BaseException) -> str:
    """``exc`` as one line of at most 300 characters, URL passwords masked (``//user:***@host``)."""
    text_ = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return _PASSWORD.sub(r"\1:***@", text_)[:300]


def _database(runtime: Runtime) -> None:
    with runtime.engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def _bank(runtime: Runtime) -> None:
    if runtime.bank.store.head("bank.json") is None:
        raise RuntimeError(f"bank.json missing in {runtime.bank.store.location}")


def _cloud(runtime: Runtime) -> None:
    runtime.driver.get_servers(CloudContext(project_id="", all_tenants=True),
                               ["00000000-0000-0000-0000-000000000000"])


#: the readiness checks by name: each raises when its dependency cannot be reached
CHECKS: dict[str, Callable[[Runtime], None]] = {"database": _database, "bank": _bank, "cloud": _cloud}


def readiness(runtime: Runtime, timeout: float = CHECK_TIMEOUT) -> dict:
    """Run every check of :data:`CHECKS` at once, each in its own thread bounded by ``timeout`` seconds.

    Returns ``{"status": "ready" | "not ready", "not_ready": [names], "checks": {name: {"ok": bool, "seconds":
    float, "error": one line (when not ok)}}}``.
    """
    results: dict[str, dict] = {}

    def run(name: str, check: Callable[[Runtime], None]) -> None:
        started = time.monotonic()
        try:
            check(runtime)
            results[name] = {"ok": True, "seconds": round(time.monotonic() - started, 4)}
        except Exception as exc:  # any failure of a dependency is "not ready", told in one line
            results[name] = {"ok": False, "seconds": round(time.monotonic() - started, 4), "error": one_line(exc)}

    threads = {name: threading.Thread(target=run, args=(name, check), daemon=True, name=f"readyz-{name}")
               for name, check in CHECKS.items()}
    for t in threads.values():
        t.start()
    deadline = time.monotonic() + timeout
    for name, t in threads.items():
        t.join(max(0.0, deadline - time.monotonic()))
        if name not in results:
            results[name] = {"ok": False, "seconds": timeout, "error": f"no answer within {timeout:g} s"}
    checks = {name: dict(results[name]) for name in CHECKS}
    failed = [name for name, c in checks.items() if not c["ok"]]
    return {"status": "not ready" if failed else "ready", "not_ready": failed, "checks": checks}


@dataclass
class Figures:
    """Job and backup figures of the database at one moment (times in seconds, sizes in bytes)."""

    #: jobs held (finished ones are kept ``engine.job_retention_days``) by (kind, status)
    jobs: dict[tuple[str, str], int] = field(default_factory=dict)
    #: seconds the oldest pending job has waited (0: none)
    oldest_pending_seconds: float = 0.0
    #: jobs that ended in the last hour by (kind, "done" | "failed")
    finished_last_hour: dict[tuple[str, str], int] = field(default_factory=dict)
    #: queued-to-ended seconds of the last job of each (kind, "done" | "failed")
    last_duration: dict[tuple[str, str], float] = field(default_factory=dict)
    #: bytes backups read from disks, and added to the bank
    read_bytes: int = 0
    stored_bytes: int = 0
    #: Unix time of the newest available backup by (project_id, server_id); 0.0 for a server bound to a policy
    #: that has none
    last_good_backup: dict[tuple[str, str], float] = field(default_factory=dict)
    #: Unix time of the last passed restore drill, and its RTO (seconds), by (project_id, server_id)
    last_good_drill: dict[tuple[str, str], float] = field(default_factory=dict)
    drill_rto: dict[tuple[str, str], float] = field(default_factory=dict)
    #: Unix time a backup of the server was last verified, by (project_id, server_id)
    last_verified: dict[tuple[str, str], float] = field(default_factory=dict)
    #: backups a verify job or drill found damaged (CSBS status ``error``, fail op ``verify``), by project_id
    damaged_backups: dict[str, int] = field(default_factory=dict)


def _unix(when: datetime | None) -> float:
    """Seconds since the epoch of a naive-UTC datetime (the database's convention)."""
    return when.replace(tzinfo=UTC).timestamp() if when is not None else 0.0


def figures(runtime: Runtime, kinds: tuple[str, ...] = ("backup", "restore", "delete")) -> Figures:
    """:class:`Figures` read from ``runtime``'s database (raises what SQLAlchemy raises when it is away)."""
    now = utcnow()
    out = Figures()
    with runtime.sessions() as session:
        out.jobs = {(k, s): n for k, s, n in session.execute(
            select(Job.kind, Job.status, func.count()).group_by(Job.kind, Job.status))}
        oldest = session.scalar(select(func.min(Job.created_at)).where(Job.status == "pending"))
        out.oldest_pending_seconds = max((now - oldest).total_seconds(), 0.0) if oldest is not None else 0.0
        out.finished_last_hour = {(k, s): n for k, s, n in session.execute(
            select(Job.kind, Job.status, func.count())
            .where(Job.status.in_(("done", "failed")), Job.finished_at >= now - timedelta(hours=1))
            .group_by(Job.kind, Job.status))}
        for kind in kinds:
            for status in ("done", "failed"):
                row = session.execute(
                    select(Job.created_at, Job.finished_at)
                    .where(Job.kind == kind, Job.status == status, Job.finished_at.is_not(None))
                    .order_by(Job.finished_at.desc()).limit(1)).first()
                if row is not None:
                    out.last_duration[(kind, status)] = (row.finished_at - row.created_at).total_seconds()
        read, stored = session.execute(
            select(func.coalesce(func.sum(VolumeBackup.read_bytes), 0),
                   func.coalesce(func.sum(VolumeBackup.stored_bytes), 0))).one()
        out.read_bytes, out.stored_bytes = int(read), int(stored)
        for project, server, when in session.execute(
                select(CheckpointItem.project_id, CheckpointItem.resource_id,
                       func.max(func.coalesce(CheckpointItem.protected_at, CheckpointItem.finished_at)))
                .where(CheckpointItem.status == "available")
                .group_by(CheckpointItem.project_id, CheckpointItem.resource_id)):
            out.last_good_backup[(project, server)] = _unix(when)
        for project, server in session.execute(
                select(Policy.project_id, PolicyResource.resource_id)
                .join(Policy, Policy.id == PolicyResource.policy_id)):
            out.last_good_backup.setdefault((project, server), 0.0)
        _check_figures(session, out)
    return out


def _check_figures(session, out: Figures) -> None:
    """The verify and drill figures of :class:`Figures` (docs/verify.md, "Metrics")."""
    from opencsbs.db.models import BackupCheck, Drill

    last = (select(Drill.project_id, Drill.resource_id, func.max(Drill.finished_at).label("at"))
            .where(Drill.status == "passed").group_by(Drill.project_id, Drill.resource_id).subquery())
    for project, server, at, rto in session.execute(
            select(Drill.project_id, Drill.resource_id, Drill.finished_at, Drill.rto_seconds)
            .join(last, (Drill.project_id == last.c.project_id) & (Drill.resource_id == last.c.resource_id)
                  & (Drill.finished_at == last.c.at))
            .where(Drill.status == "passed")):
        out.last_good_drill[(project, server)] = _unix(at)
        out.drill_rto[(project, server)] = float(rto or 0.0)
    for project, server, at in session.execute(
            select(BackupCheck.project_id, BackupCheck.resource_id, func.max(BackupCheck.last_verified_at))
            .where(BackupCheck.last_verified_at.is_not(None))
            .group_by(BackupCheck.project_id, BackupCheck.resource_id)):
        out.last_verified[(project, server)] = _unix(at)
    out.damaged_backups = {project: n for project, n in session.execute(
        select(CheckpointItem.project_id, func.count())
        .where(CheckpointItem.status == "error", CheckpointItem.fail_op == "verify")
        .group_by(CheckpointItem.project_id))}
