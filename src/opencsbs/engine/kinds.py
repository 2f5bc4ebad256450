"""The job kinds the workers run: ``kind`` → its runner and its failure path, and the failures that are
transient (the job is given back and tried again later)."""

from __future__ import annotations

from collections.abc import Callable

from opencsbs.bank.errors import BankUnavailable
from opencsbs.clouds.base import CloudUnavailable
from opencsbs.core.errors import CSBSError
from opencsbs.engine.backup import fail_backup, run_backup
from opencsbs.engine.copy import fail_copy, run_copy
from opencsbs.engine.delete import fail_delete, run_delete
from opencsbs.engine.drill import fail_drill, run_drill
from opencsbs.engine.jobs import JobHandle, Retry
from opencsbs.engine.restore import fail_restore, run_restore
from opencsbs.engine.verify import fail_verify, run_verify
from opencsbs.runtime import Runtime

Runner = Callable[[Runtime, JobHandle], None]
Failer = Callable[[Runtime, JobHandle, CSBSError], None]

RUNNERS: dict[str, Runner] = {"backup": run_backup, "restore": run_restore, "delete": run_delete, "copy": run_copy,
                              "verify": run_verify, "drill": run_drill}
FAILERS: dict[str, Failer] = {"backup": fail_backup, "restore": fail_restore, "delete": fail_delete,
                              "copy": fail_copy, "verify": fail_verify, "drill": fail_drill}
TRANSIENT: tuple[type[Exception], ...] = (CloudUnavailable, Retry, BankUnavailable)
