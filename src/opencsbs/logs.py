"""Logging of the long-running processes (``serve``, ``worker``, ``scheduler``): one handler on stderr whose lines
carry a UTC timestamp, the level, the logger and the request or job being served.

- :func:`configure` installs the handler (``log_level``, ``log_format`` ``text`` or ``json`` from the settings);
  uvicorn's loggers go through it too (``serve`` passes ``log_config=None`` to uvicorn).
- :data:`request_id` is set by the API's :class:`~opencsbs.api.observe.Observe` middleware for each request
  (``req-<uuid>``, also sent back in the ``X-Openstack-Request-Id`` header); :data:`job_id` by :func:`job_scope`
  around each job a worker runs, which also logs the job's start and end (result, duration, bytes) at INFO.

Text line: ``2026-12-05T06:41:07.532Z INFO opencsbs.engine [job=5b0c…] backup job 5b0c… started …``.
JSON line: ``{"time": "…", "level": "INFO", "logger": "opencsbs.engine", "message": "…", "job_id": "5b0c…"}``.
No secret is formatted here: messages are what the code logs (tests check that tokens and passwords never are).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

#: id of the API request being served (``req-<uuid>``), None outside requests
request_id: ContextVar[str | None] = ContextVar("opencsbs_request_id", default=None)
#: id of the engine job being run, None outside jobs
job_id: ContextVar[str | None] = ContextVar("opencsbs_job_id", default=None)

log = logging.getLogger("opencsbs.engine")

#: the loggers uvicorn writes to; their own handlers are removed so their lines go through ours
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
#: libraries that log every outgoing HTTP call at INFO: kept at WARNING unless ``log_level`` is ``debug``
QUIET_LOGGERS = ("httpx", "httpcore")


class ContextFilter(logging.Filter):
    """Adds ``request_id``, ``job_id`` and ``context`` (``req-…``, ``job=…`` or ``-``) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        record.job_id = job_id.get()
        record.context = record.request_id or (f"job={record.job_id}" if record.job_id else "-")
        return True


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + \
        f"{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    """``<UTC time> <LEVEL> <logger> [<request or job>] <message>``, then the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        context = getattr(record, "context", "-")
        line = f"{_timestamp(record)} {record.levelname} {record.name} [{context}] {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time``, ``level``, ``logger``, ``message``, ``request_id`` or ``job_id`` when set,
    ``exception`` (the traceback text) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"time": _timestamp(record), "level": record.levelname, "logger": record.name,
                               "message": record.getMessage()}
        for key in ("request_id", "job_id"):
            value = getattr(record, key, None)
            if value:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class _Handler(logging.StreamHandler):
    """Our handler (recognised by its class, so :func:`configure` replaces it instead of adding a second)."""


def configure(level: str = "info", fmt: str = "text", stream: Any = None) -> logging.Handler:
    """Send every log record at ``level`` or above to ``stream`` (default stderr) in ``fmt`` (``text`` or
    ``json``); returns the handler. Other handlers of the root logger (pytest's, for one) are left in place."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    handler = _Handler(stream or sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in QUIET_LOGGERS:  # a line per outgoing HTTP call: only when debugging
        logging.getLogger(name).setLevel(root.level if root.level <= logging.DEBUG else max(logging.WARNING,
                                                                                                root.level))
    for name in UVICORN_LOGGERS:
        one = logging.getLogger(name)
        for old in list(one.handlers):
            one.removeHandler(old)
        one.propagate = True
        one.setLevel(level.upper())
    return handler


def configure_from(settings: Any) -> logging.Handler:
    """:func:`configure` with ``settings.log_level`` and ``settings.log_format``."""
    return configure(settings.log_level, settings.log_format)


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _job_outcome(runtime: Any, job: Any) -> tuple[str, str, str]:
    """``(status, error, what moved)`` of ``job`` as the database has it after a run."""
    from sqlalchemy import func, select

    from opencsbs.db.models import Job, VolumeBackup

    with runtime.sessions() as session:
        row = session.get(Job, job.id)
        status, error = (row.status, row.error or "") if row is not None else ("gone", "")
        moved = ""
        if job.kind == "backup":
            read, stored = session.execute(
                select(func.coalesce(func.sum(VolumeBackup.read_bytes), 0),
                       func.coalesce(func.sum(VolumeBackup.stored_bytes), 0))
                .where(VolumeBackup.checkpoint_item_id == job.target_id)).one()
            moved = f", read {_human(read)} ({read} bytes), stored {_human(stored)} ({stored} bytes)"
    return status, error, moved


@contextmanager
def job_scope(runtime: Any, job: Any) -> Iterator[None]:
    """Around one run of ``job`` (a :class:`~opencsbs.engine.jobs.JobHandle`) by a worker: every line logged in
    it carries the job's id; its start is logged at INFO, its end with the job's status, the run's duration in
    seconds and, for a backup, the bytes read from the disks and stored in the bank (INFO when done, WARNING
    when failed, INFO when left for a later attempt)."""
    token = job_id.set(job.id)
    started = time.monotonic()
    subject = f" of {job.resource_id}" if getattr(job, "resource_id", None) else ""
    log.info("%s job %s%s started (project %s, attempt %s, step %s)", job.kind, job.id, subject, job.project_id,
             job.attempts, job.step)
    try:
        yield
    finally:
        seconds = time.monotonic() - started
        try:
            status, error, moved = _job_outcome(runtime, job)
        except Exception as exc:  # the database went away: still say the run ended
            status, error, moved = "unknown", f"{type(exc).__name__}", ""
        if status == "done":
            log.info("%s job %s%s done in %.1f s%s", job.kind, job.id, subject, seconds, moved)
        elif status == "failed":
            log.warning("%s job %s%s failed after %.1f s%s: %s", job.kind, job.id, subject, seconds, moved, error)
        else:
            log.info("%s job %s%s stopped after %.1f s, %s (run again later)", job.kind, job.id, subject,
                     seconds, status)
        job_id.reset(token)
