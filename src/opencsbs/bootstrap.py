"""The wiring: builds a :class:`~opencsbs.runtime.Runtime` from :class:`~opencsbs.config.Settings` and starts
its background parts.

- :func:`build_runtime` — database (migrated first), cloud driver (:func:`build_driver`), authenticator
  (:func:`build_authenticator`), policy enforcer; loads the sandbox inventory file when one is set.
- :func:`start_workers` — engine worker threads (:class:`opencsbs.engine.worker.WorkerPool`).
- :func:`make_scheduler` / :func:`start_scheduler` — the policy scheduler, whose runs go through
  ``service.policy_runs`` and whose housekeeping is ``engine.housekeeping.housekeep``.

``opencsbs serve``/``worker``/``scheduler``, the HTTP worker processes and the tests call these. This is the only
module that imports a use case (``service.policy_runs``) together with the engine's threads; nothing below
imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from opencsbs.auth.base import Authenticator
from opencsbs.auth.rules import Enforcer
from opencsbs.clouds.base import Inventory
from opencsbs.config import Settings
from opencsbs.core.timeutil import utcnow
from opencsbs.db.base import make_engine, make_sessionmaker, transaction
from opencsbs.engine import bank_checks, housekeeping
from opencsbs.engine.scheduler import Scheduler
from opencsbs.engine.worker import WorkerPool
from opencsbs.runtime import Runtime
from opencsbs.service import policy_runs, replica_retention, replication
from opencsbs.service import verify as checks


def build_runtime(settings: Settings, migrate: bool = True) -> Runtime:
    """A runtime on ``settings``; with ``migrate`` the database is brought to the newest schema first.

    Creates ``settings.data_dir``. Raises ``ValueError`` for an unknown driver or auth mode, or settings a driver
    refuses when it is built (e.g. a missing Ceph keyring)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if migrate:
        from opencsbs.db.migrate import upgrade

        upgrade(settings.db_url)
    engine = make_engine(settings.db_url)
    sessions = make_sessionmaker(engine)
    driver = build_driver(settings, sessions)
    authenticator = build_authenticator(settings, sessions)
    enforcer = Enforcer.from_file(settings.auth.policy_file)
    runtime = Runtime(settings, engine, sessions, driver, authenticator, enforcer)
    if settings.cloud.driver == "sandbox" and settings.cloud.inventory:
        from opencsbs.clouds.sandbox.inventory import load_inventory_file

        with transaction(sessions) as session:
            load_inventory_file(session, settings.cloud.inventory, settings.volumes_dir)
    return runtime


def build_driver(settings: Settings, sessions: sessionmaker[Session]) -> Inventory:
    """The cloud driver named by ``settings.cloud.driver`` (``sandbox``, ``libvirt``, ``openstack``)."""
    name = settings.cloud.driver
    if name == "sandbox":
        from opencsbs.clouds.sandbox import SandboxDriver

        return SandboxDriver(sessions, settings.volumes_dir, host=settings.worker.host_name)
    if name == "libvirt":
        from opencsbs.clouds.libvirt import LibvirtDriver

        return LibvirtDriver.from_settings(settings)
    if name == "openstack":
        from opencsbs.clouds.openstack import build_openstack_driver

        return build_openstack_driver(settings)
    raise ValueError(f"unknown cloud driver {name!r}")


def build_authenticator(settings: Settings, sessions: sessionmaker[Session]) -> Authenticator:
    """The authenticator named by ``settings.auth.mode`` (``local``, ``keystone``)."""
    if settings.auth.mode == "local":
        from opencsbs.auth.local import LocalAuthenticator

        return LocalAuthenticator(sessions, admin_project_id=settings.auth.admin_project_id)
    if settings.auth.mode == "keystone":
        from opencsbs.auth.keystone import KeystoneAuthenticator

        return KeystoneAuthenticator(settings.auth)
    raise ValueError(f"unknown auth mode {settings.auth.mode!r}")


def start_workers(runtime: Runtime, n: int | None = None, prefix: str = "worker") -> WorkerPool | None:
    """Start ``n`` (default ``settings.workers``) engine worker threads on ``runtime``; they stop on
    ``runtime.close()``. None when ``n`` is 0 or less."""
    count = runtime.settings.workers if n is None else n
    if count <= 0:
        return None
    pool = WorkerPool(runtime, count, prefix).start()
    runtime.closers.append(pool.stop)
    return pool


def make_scheduler(runtime: Runtime, clock: Callable[[], datetime] | None = None,
                   name: str = "scheduler") -> Scheduler:
    """A policy :class:`~opencsbs.engine.scheduler.Scheduler` on ``runtime`` whose runs go through
    ``service.policy_runs`` (``clock``: naive-UTC callable, default the real time); not started."""
    settings = runtime.settings
    for key in ("gc_schedule", "verify_schedule"):  # refused at start, in one line, rather than at each pass
        if getattr(settings.engine, key):
            bank_checks.bank_schedule(getattr(settings.engine, key), key)
    return Scheduler(
        runtime.sessions,
        fire=lambda run_id: policy_runs.run_slot(runtime, run_id, clock() if clock else None),
        retain=lambda policy_id: (policy_runs.apply_retention(runtime, policy_id, clock() if clock else None),
                                  replication.enqueue_due_copies(runtime, policy_id),
                                  replica_retention.apply_replica_retention(runtime, policy_id,
                                                                            clock() if clock else None)),
        clock=clock or utcnow,
        interval=settings.scheduler_interval,
        retention_every=timedelta(hours=settings.retention_interval_hours),
        name=name,
        housekeep=lambda: (housekeeping.housekeep(runtime), checks.start_due(runtime, clock() if clock else None)),
        housekeeping_every=settings.engine.housekeeping_seconds,
        every_pass=lambda: bank_checks.run_due(runtime, clock() if clock else None),
    )


def start_scheduler(runtime: Runtime) -> Scheduler:
    """Start the policy scheduler thread on ``runtime``; it stops on ``runtime.close()``."""
    scheduler = make_scheduler(runtime).start()
    runtime.closers.append(scheduler.stop)
    return scheduler
