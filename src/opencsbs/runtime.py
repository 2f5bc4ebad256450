"""The runtime record: the adapters a request or a worker reads, built once per process.

:mod:`opencsbs.bootstrap` builds it (``build_runtime(settings)``) and starts the workers and the scheduler on
it; the HTTP app reads it from ``app.state.runtime``; the services and the engine take it as their first
argument. This module imports only what it holds (settings, database, cloud driver, authenticator, bank), never
a use case or the engine.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from opencsbs.auth.base import Authenticator
from opencsbs.auth.rules import Enforcer
from opencsbs.bank import Bank, open_bank
from opencsbs.clouds.base import Inventory
from opencsbs.config import Settings
from opencsbs.core.protectable import ProtectableConfig

_BANK_LOCK = threading.Lock()


@dataclass
class Runtime:
    """Everything a request or a worker needs: ``settings``, the database (``engine``, ``sessions``), the cloud
    ``driver`` (an :class:`~opencsbs.clouds.base.Inventory`, also a :class:`~opencsbs.clouds.base.DataPath` when it moves data), the ``authenticator`` and ``enforcer``, and the :attr:`bank` (opened on first use).
    ``closers``: what :meth:`close` stops first, newest first (worker pools, schedulers)."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    driver: Inventory
    authenticator: Authenticator
    enforcer: Enforcer
    closers: list[Callable[[], None]] = field(default_factory=list)
    _bank: Bank | None = field(default=None, repr=False)

    @property
    def bank(self) -> Bank:
        """The bank of ``settings`` (:func:`opencsbs.bank.open_bank`, opened on first use: API processes that
        never move data need not open it). The engine uses its :class:`~opencsbs.bank.face.VolumeStore` face."""
        bank = self._bank
        if bank is None:
            with _BANK_LOCK:
                bank = self._bank
                if bank is None:
                    bank = self._bank = open_bank(self.settings)
        return bank

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
        """Stop background parts (:attr:`closers`) and release the bank, the driver and the connections."""
        for closer in reversed(self.closers):
            closer()
        self.closers = []
        bank, self._bank = self._bank, None
        if bank is not None:
            bank.close()
        self.driver.close()
        self.authenticator.close()
        self.engine.dispose()
