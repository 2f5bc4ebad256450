"""Prometheus metrics at ``GET /metrics`` (an opencsbs extension: not a CSBS call, no CSBS body changes), in the
text exposition format of the official ``prometheus-client``.

Two sources (docs/operations.md lists every metric):

- **API requests**, counted by the :class:`~opencsbs.api.observe.Observe` middleware of each HTTP process:
  ``opencsbs_http_requests_total`` and ``opencsbs_http_request_duration_seconds`` by ``method``, ``route`` (the
  route template such as ``/v1/{project_id}/policies/{policy_id}``, never the raw path, so the label set stays
  bounded) and ``status``. With ``serve --workers N`` the processes share them through prometheus-client's
  multiprocess mode (:func:`enable_multiprocess`), so any process answers with the sum of all.
- **Jobs and backups**, read from the database at scrape time by :class:`DatabaseCollector` (so every process,
  whatever it runs, answers the same figures): jobs by kind and status, queue depth and age of the oldest pending
  job, jobs finished in the last hour by result, the last job's duration, bytes read and stored by backups, and
  the last successful backup time per server (0 for a server of a policy that has none yet).

``metrics_token`` set: the scraper must send ``Authorization: Bearer <token>`` (else 401 in the CSBS error shape).
"""

from __future__ import annotations

import hmac
from datetime import UTC
import logging
import os
import tempfile

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from opencsbs.api.deps import get_runtime
from opencsbs.core import codes
from opencsbs.core.errors import CSBSError
from opencsbs.runtime import Runtime
from opencsbs.core.timeutil import parse_wire_ts
from opencsbs.service import operations, replication

log = logging.getLogger("opencsbs.api")

#: where the HTTP processes of ``serve --workers N`` share their request metrics (prometheus-client's variable)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

disable_created_metrics()  # no ``*_created`` series: Prometheus does not need them and they double the output

#: request metrics of this process (or, in multiprocess mode, of every process: their values live in files)
REQUESTS = CollectorRegistry()
HTTP_REQUESTS = Counter("opencsbs_http_requests", "API requests answered, by method, route template and status",
                        ["method", "route", "status"], registry=REQUESTS)
HTTP_LATENCY = Histogram("opencsbs_http_request_duration_seconds",
                         "Seconds from a request's arrival to the end of its answer, by method, route template and "
                         "status", ["method", "route", "status"], registry=REQUESTS,
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))

#: job kinds and statuses always reported (0 when none), so alert expressions never see a missing series
JOB_KINDS = ("backup", "restore", "delete", "verify", "drill", "copy")
JOB_STATUSES = ("pending", "running", "done", "failed")


def enable_multiprocess(directory: str | None = None) -> str:
    """Make HTTP processes spawned from now on share their request metrics in ``directory`` (default
    ``$PROMETHEUS_MULTIPROC_DIR``, else a new temporary directory), emptied of an earlier run's files; returns it.
    ``serve --workers N`` calls it with ``<data_dir>/metrics`` before the processes start (the variable must be
    set before prometheus-client is imported by them)."""
    path = directory or os.environ.get(MULTIPROC_ENV) or tempfile.mkdtemp(prefix="opencsbs-metrics-")
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):  # values of an earlier run are not this run's
        if name.endswith(".db"):
            os.unlink(os.path.join(path, name))
    os.environ[MULTIPROC_ENV] = path
    return path


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    """Count one answered request (``route``: its template, ``"unmatched"`` when no route took it)."""
    labels = (method, route, str(status))
    HTTP_REQUESTS.labels(*labels).inc()
    HTTP_LATENCY.labels(*labels).observe(seconds)


class _RequestMetrics(Collector):
    """The request metrics: this process's, or every process's in multiprocess mode."""

    def collect(self):
        path = os.environ.get(MULTIPROC_ENV)
        if path and os.path.isdir(path):
            from prometheus_client.multiprocess import MultiProcessCollector

            yield from MultiProcessCollector(None, path=path).collect()
        else:
            yield from REQUESTS.collect()


class DatabaseCollector(Collector):
    """Job and backup figures read from ``runtime``'s database at each scrape (:func:`opencsbs.service.operations.
    figures`: a handful of aggregate queries; docs/operations.md gives their cost), and ``opencsbs_database_up``."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    def collect(self):
        try:
            figures = list(self._collect())
        except Exception as exc:  # the database is away: say so, and still serve the request metrics
            log.warning("metrics: cannot read the database: %s", operations.one_line(exc))
            yield GaugeMetricFamily("opencsbs_database_up", "1 when the job and backup figures could be read from "
                                    "the database at this scrape, else 0", value=0)
            return
        yield GaugeMetricFamily("opencsbs_database_up", "1 when the job and backup figures could be read from the "
                                "database at this scrape, else 0", value=1)
        yield from figures

    def _collect(self):
        got = operations.figures(self.runtime, JOB_KINDS)
        jobs = GaugeMetricFamily("opencsbs_jobs", "Jobs held in the database by kind and status (finished ones are "
                                 "kept engine.job_retention_days)", labels=["kind", "status"])
        for kind in sorted(set(JOB_KINDS) | {k for k, _ in got.jobs}):
            for status in sorted(set(JOB_STATUSES) | {s for k, s in got.jobs if k == kind}):
                jobs.add_metric([kind, status], got.jobs.get((kind, status), 0))
        yield jobs
        yield GaugeMetricFamily("opencsbs_job_queue_depth", "Jobs waiting for a worker (status pending)",
                                value=sum(n for (_, s), n in got.jobs.items() if s == "pending"))
        yield GaugeMetricFamily("opencsbs_job_oldest_pending_age_seconds",
                                "Seconds the oldest pending job has waited (0: none waits)",
                                value=got.oldest_pending_seconds)
        finished = GaugeMetricFamily("opencsbs_jobs_finished_last_hour",
                                     "Jobs that ended in the last hour, by kind and result (done or failed)",
                                     labels=["kind", "result"])
        for kind in JOB_KINDS:
            for status in ("done", "failed"):
                finished.add_metric([kind, status], got.finished_last_hour.get((kind, status), 0))
        yield finished
        duration = GaugeMetricFamily("opencsbs_job_last_duration_seconds",
                                     "Seconds from queued to ended of the last job of each kind and result",
                                     labels=["kind", "result"])
        for (kind, status), seconds in sorted(got.last_duration.items()):
            duration.add_metric([kind, status], seconds)
        yield duration
        yield CounterMetricFamily("opencsbs_backup_read_bytes", "Bytes read from disks by backups",
                                  value=got.read_bytes)
        yield CounterMetricFamily("opencsbs_backup_stored_bytes",
                                  "Bytes backups added to the bank (new chunks, after compression)",
                                  value=got.stored_bytes)
        last = GaugeMetricFamily("opencsbs_last_successful_backup_timestamp_seconds",
                                 "Unix time of the newest available backup of each server (0: a server bound to a "
                                 "policy without any)", labels=["project_id", "server_id"])
        for (project, server), when in got.last_good_backup.items():
            last.add_metric([project, server], when)
        yield last
        yield from _check_metrics(got)
        yield from _replication_metrics(replication.list_rules(self.runtime))


def _replication_metrics(rules: list[dict]):
    """Replication rules' lag (docs/replication.md, "Lag"), one series per rule."""
    labels = ["project_id", "policy_id", "replica"]
    pending = GaugeMetricFamily("opencsbs_replication_pending_backups",
                                "Available backups of a replication rule's policy not yet copied to its replica "
                                "(copies waiting or running excluded)", labels=labels)
    failed = GaugeMetricFamily("opencsbs_replication_failed_backups",
                               "Backups of a replication rule's policy whose last copy to its replica failed",
                               labels=labels)
    behind = GaugeMetricFamily("opencsbs_replication_oldest_pending_timestamp_seconds",
                               "Unix creation time of the oldest backup of a rule's policy not yet copied "
                               "(0: none pending)", labels=labels)
    last = GaugeMetricFamily("opencsbs_replication_last_success_timestamp_seconds",
                             "Unix time the newest successful copy of a rule's policy to its replica ended (0: none)",
                             labels=labels)
    sent = CounterMetricFamily("opencsbs_replication_sent_bytes",
                               "Stored bytes sent to a rule's replica for its policy's backups", labels=labels)
    for rule in rules:
        key = [rule["project_id"], rule["policy_id"], rule["replica"]]
        pending.add_metric(key, rule["pending"])
        failed.add_metric(key, rule["failed"])
        behind.add_metric(key, _unix(rule["oldest_pending_since"]))
        last.add_metric(key, _unix(rule["last_success"]))
        sent.add_metric(key, rule["sent_bytes"])
    yield from (pending, failed, behind, last, sent)


def _unix(wire: str | None) -> float:
    """Seconds since the epoch of a wire timestamp (naive UTC), 0 for None."""
    if not wire:
        return 0.0
    return parse_wire_ts(wire).replace(tzinfo=UTC).timestamp()


def _check_metrics(got: operations.Figures):
    """Verify jobs and restore drills (docs/verify.md, "Metrics")."""
    drill = GaugeMetricFamily("opencsbs_last_good_drill_timestamp_seconds",
                              "Unix time of the last passed restore drill of each server", labels=["project_id",
                                                                                                   "server_id"])
    rto = GaugeMetricFamily("opencsbs_drill_rto_seconds",
                            "Seconds the last passed restore drill of each server took to restore (its RTO)",
                            labels=["project_id", "server_id"])
    for key, when in got.last_good_drill.items():
        drill.add_metric(list(key), when)
        rto.add_metric(list(key), got.drill_rto.get(key, 0.0))
    verified = GaugeMetricFamily("opencsbs_last_verify_timestamp_seconds",
                                 "Unix time a backup of each server was last verified", labels=["project_id",
                                                                                                "server_id"])
    for key, when in got.last_verified.items():
        verified.add_metric(list(key), when)
    damaged = GaugeMetricFamily("opencsbs_damaged_backups",
                                "Backups a verify job or drill found damaged (CSBS status error), by project",
                                labels=["project_id"])
    for project, n in got.damaged_backups.items():
        damaged.add_metric([project], n)
    yield from (drill, rto, verified, damaged)


class BankCollector(Collector):
    """The bank's last garbage collection and whole-bank verify (their records in the bank, written by whichever
    process ran them: :func:`opencsbs.service.maintenance.bank_status`), read at each scrape; a series is left
    out until its first run. A bank that cannot be read is logged and leaves them out."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    def collect(self):
        from opencsbs.service.maintenance import bank_status

        try:
            status = bank_status(self.runtime)
        except Exception as exc:  # noqa: BLE001 - the other metrics still answer
            log.warning("metrics: cannot read the bank's records: %s", operations.one_line(exc))
            return
        gc, verify = status["gc"]["last"], status["verify"]["last"]
        if gc is not None:
            yield GaugeMetricFamily("opencsbs_bank_gc_last_end_timestamp_seconds",
                                    "When the bank's last garbage collection ended (POSIX seconds)",
                                    value=_posix(gc["ended_at"]))
            yield GaugeMetricFamily("opencsbs_bank_gc_last_freed_bytes",
                                    "Bytes the bank's last garbage collection freed", value=gc.get("freed_bytes", 0))
            yield GaugeMetricFamily("opencsbs_bank_gc_reclaimable_bytes", "Bytes of unreferenced chunks the last "
                                    "garbage collection kept for the grace period (the next one frees them)",
                                    value=gc.get("reclaimable_bytes", 0))
        if verify is not None:
            yield GaugeMetricFamily("opencsbs_bank_verify_last_end_timestamp_seconds",
                                    "When the bank's last whole-bank verify ended (POSIX seconds)",
                                    value=_posix(verify["ended_at"]))
            yield GaugeMetricFamily("opencsbs_bank_verify_last_problems", "Damaged indexes, damaged chunks and "
                                    "missing chunks the last whole-bank verify found (0: sound)",
                                    value=sum(verify.get(k, 0) for k in ("damaged_indexes", "damaged_chunks",
                                                                         "missing_chunks")))


def _posix(wire: str) -> float:
    from datetime import UTC

    from opencsbs.core.timeutil import parse_wire_ts

    return parse_wire_ts(wire).replace(tzinfo=UTC).timestamp()


def registry_for(runtime: Runtime) -> CollectorRegistry:
    """The registry ``/metrics`` of ``runtime``'s app answers from (request metrics, then database figures)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_RequestMetrics())
    registry.register(DatabaseCollector(runtime))
    registry.register(BankCollector(runtime))
    return registry


router = APIRouter(tags=["opencsbs operations"])


def _check_token(runtime: Runtime, request: Request) -> None:
    expected = runtime.settings.metrics_token
    if not expected:
        return
    given = request.headers.get("authorization", "")
    scheme, _, token = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise CSBSError(codes.AUTH_FAILED, "metrics_token is set: send Authorization: Bearer <metrics_token>")


@router.get("/metrics", summary="Prometheus metrics (extension)", response_class=Response,
            responses={200: {"description": "Prometheus text exposition format 0.0.4",
                             "content": {"text/plain": {"schema": {"type": "string"}}}}})
def metrics(request: Request, runtime: Runtime = Depends(get_runtime)) -> Response:
    """Request, job and backup metrics in Prometheus's text format; no token unless ``metrics_token`` is set
    (then ``Authorization: Bearer <metrics_token>``). docs/operations.md lists every metric."""
    _check_token(runtime, request)
    registry = request.app.state.__dict__.get("metrics_registry")
    if registry is None:
        registry = request.app.state.metrics_registry = registry_for(runtime)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_PLAIN_0_0_4)
