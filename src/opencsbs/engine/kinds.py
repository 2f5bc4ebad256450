"""The job kinds the workers run: ``kind`` → its runner and its failure path, and the failures that are
transient (the job is given back and tried again later)."""

from __future__ import annotations

from collections.abc import Callable

from opencsbs.bank.errors import BankUnavailable
from opencsbs.clouds.base import CloudUnavailable
from opencsbs.core.errors import CSBSError
from opencsbs.engine.backup import fail_backup, run_backup
from opencsbs.engine.delete import fail_delete, run_delete
from opencsbs.engine.jobs import JobHandle, Retry
from opencsbs.engine.restore import fail_restore, run_restore
from opencsbs.runtime import Runtime

Runner = Callable[[Runtime, JobHandle], None]
Failer = Callable[[Runtime, JobHandle, CSBSError], None]

RUNNERS: dict[str, Runner] = {"backup": run_backup, "restore": run_restore, "delete": run_delete}
FAILERS: dict[str, Failer] = {"backup": fail_backup, "restore": fail_restore, "delete": fail_delete}
TRANSIENT: tuple[type[Exception], ...] = (CloudUnavailable, Retry, BankUnavailable)
