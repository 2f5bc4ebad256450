"""The interface every cloud driver implements.

Inventory side (what the CSBS rules read): :meth:`CloudDriver.get_servers` returns :class:`ServerFacts` for a
whole batch of ids with a constant number of cloud calls (list with filters, never one call per id).
``calls`` counts the cloud calls a driver made, so benchmarks and tests can assert that.

Errors: a driver that cannot reach or authenticate to its cloud raises :class:`CloudUnavailable`; the API
answers 503 with CSBS.9999 rather than a wrong verdict.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from opencsbs.core import codes
from opencsbs.core.errors import CSBSError
from opencsbs.core.facts import SERVER_TYPES, ServerFacts


@dataclass(frozen=True)
class CloudContext:
    """Who asks: the project whose resources are visible, and (keystone mode) the caller's token to pass on."""

    project_id: str
    auth_token: str | None = None
    all_tenants: bool = False


class CloudUnavailable(CSBSError):
    """The cloud did not answer, answered 5xx, or refused the service credentials (HTTP 503, CSBS.9999)."""

    def __init__(self, what: str):
        super().__init__(codes.CLOUD_UNAVAILABLE, what)


class CloudDriver(ABC):
    """Base of cloud drivers. Thread-safe: API threads and workers share one instance."""

    #: short name used in config (``cloud.driver``)
    name: str = "abstract"
    #: server types this driver can back up (subset of ``core.facts.SERVER_TYPES``)
    protectable_types: frozenset[str] = SERVER_TYPES

    def __init__(self) -> None:
        self._calls = 0
        self._calls_lock = threading.Lock()

    @property
    def calls(self) -> int:
        """Cloud calls made so far (for benchmarks and call-count tests)."""
        return self._calls

    def count_call(self, n: int = 1) -> None:
        """Record ``n`` cloud calls."""
        with self._calls_lock:
            self._calls += n

    @abstractmethod
    def get_servers(self, ctx: CloudContext, server_ids: Sequence[str]) -> dict[str, ServerFacts]:
        """Facts of the servers among ``server_ids`` that ``ctx.project_id`` may see, by id.

        Ids that are unknown, or belong to another project, are simply absent. Constant number of cloud calls
        whatever ``len(server_ids)``. Raises :class:`CloudUnavailable` when the cloud cannot be asked.
        """

    def close(self) -> None:
        """Release connections (default: nothing)."""
