"""The composition root: builds the database, cloud driver, authenticator, bank and engine workers from settings.

``Runtime.from_settings(settings)`` is what ``opencsbs serve``, the CLI and the tests use; the HTTP app reads it
from ``app.state.runtime``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from opencsbs.auth.base import Authenticator
from opencsbs.auth.rules import Enforcer
from opencsbs.clouds.base import CloudDriver
from opencsbs.config import Settings
from opencsbs.core.protectable import ProtectableConfig
from opencsbs.db.base import make_engine, make_sessionmaker, transaction


_BANK_LOCK = threading.Lock()


@dataclass
class Runtime:
    """Everything a request or a worker needs, built once per process."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    driver: CloudDriver
    authenticator: Authenticator
    enforcer: Enforcer
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings, migrate: bool = True) -> Runtime:
        """Build a runtime; with ``migrate`` the database is brought to the newest schema first."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        if migrate:
            from opencsbs.db.migrate import upgrade

            upgrade(settings.db_url)
        engine = make_engine(settings.db_url)
        sessions = make_sessionmaker(engine)
        driver = build_driver(settings, sessions)
        authenticator = build_authenticator(settings, sessions)
        enforcer = Enforcer.from_file(settings.auth.policy_file)
        runtime = cls(settings, engine, sessions, driver, authenticator, enforcer)
        if settings.cloud.driver == "sandbox" and settings.cloud.inventory:
            from opencsbs.clouds.sandbox.inventory import load_inventory_file

            with transaction(sessions) as session:
                load_inventory_file(session, settings.cloud.inventory, settings.volumes_dir)
        return runtime

    @property
    def bank(self) -> Any:
        """The bank (opened on first use: API processes that never move data need not open it)."""
        bank = self.extras.get("bank")
        if bank is None:
            with _BANK_LOCK:
                bank = self.extras.get("bank")
                if bank is None:
                    from opencsbs.bank import open_bank

                    bank = open_bank(self.settings)
                    self.extras["bank"] = bank
        return bank

    def start_workers(self, n: int | None = None, prefix: str = "worker") -> Any:
        """Start ``n`` (default ``settings.workers``) engine worker threads; they stop on :meth:`close`."""
        from opencsbs.engine.worker import WorkerPool

        count = self.settings.workers if n is None else n
        if count <= 0:
            return None
        pool = WorkerPool(self, count, prefix).start()
        self.extras.setdefault("closers", []).append(pool.stop)
        return pool

    def make_scheduler(self, clock: Any = None, name: str = "scheduler") -> Any:
        """A policy :class:`~opencsbs.engine.scheduler.Scheduler` whose runs go through
        ``service.policy_runs`` (``clock``: naive-UTC callable, default the real time)."""
        from datetime import timedelta

        from opencsbs.core.timeutil import utcnow
        from opencsbs.engine import housekeeping
        from opencsbs.engine.scheduler import Scheduler
        from opencsbs.service import policy_runs

        return Scheduler(
            self.sessions,
            fire=lambda run_id: policy_runs.run_slot(self, run_id, clock() if clock else None),
            retain=lambda policy_id: policy_runs.apply_retention(self, policy_id, clock() if clock else None),
            clock=clock or utcnow,
            interval=self.settings.scheduler_interval,
            retention_every=timedelta(hours=self.settings.retention_interval_hours),
            name=name,
            housekeep=lambda: housekeeping.housekeep(self),
            housekeeping_every=self.settings.engine.housekeeping_seconds,
        )

    def start_scheduler(self) -> Any:
        """Start the policy scheduler thread; it stops on :meth:`close`."""
        scheduler = self.make_scheduler().start()
        self.extras.setdefault("closers", []).append(scheduler.stop)
        return scheduler

    @property
    def protectable_config(self) -> ProtectableConfig:
        """The rule settings for check_protectable, from the cloud settings and the driver's abilities."""
        cloud = self.settings.cloud
        return ProtectableConfig(
            protectable_types=self.driver.protectable_types,
            azs_without_backup=frozenset(cloud.azs_without_backup),
            unprotectable_service_types=frozenset(s.lower() for s in cloud.unprotectable_service_types),
            data_backends=self.driver.data_backends,
        )

    def close(self) -> None:
        """Stop background parts and release connections."""
        for closer in reversed(self.extras.get("closers", [])):
            closer()
        self.extras["closers"] = []
        bank = self.extras.pop("bank", None)
        if bank is not None and hasattr(bank, "close"):
            bank.close()
        self.driver.close()
        self.authenticator.close()
        self.engine.dispose()


def build_driver(settings: Settings, sessions: sessionmaker[Session]) -> CloudDriver:
    """The cloud driver named by ``settings.cloud.driver``."""
    name = settings.cloud.driver
    if name == "sandbox":
        from opencsbs.clouds.sandbox import SandboxDriver

        return SandboxDriver(sessions, settings.volumes_dir)
    if name == "libvirt":
        from opencsbs.clouds.libvirt import LibvirtDriver

        return LibvirtDriver.from_settings(settings)
    if name == "openstack":
        from opencsbs.clouds.openstack import build_openstack_driver

        return build_openstack_driver(settings)
    raise ValueError(f"unknown cloud driver {name!r}")


def build_authenticator(settings: Settings, sessions: sessionmaker[Session]) -> Authenticator:
    """The authenticator named by ``settings.auth.mode``."""
    if settings.auth.mode == "local":
        from opencsbs.auth.local import LocalAuthenticator

        return LocalAuthenticator(sessions, admin_project_id=settings.auth.admin_project_id)
    if settings.auth.mode == "keystone":
        from opencsbs.auth.keystone import KeystoneAuthenticator

        return KeystoneAuthenticator(settings.auth)
    raise ValueError(f"unknown auth mode {settings.auth.mode!r}")
