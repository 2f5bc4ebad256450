"""The policy scheduler: fires every enabled scheduled operation at its times, and applies retention.

Each pass (``tick``) reads the operations whose ``next_run_at`` has come. For each, the slot to run is the
latest time point of its pattern at or before now (after downtime the missed slot runs once, not a burst of
every missed one), and the next one is the first after now. A scheduler claims the slot with a compare-and-swap
on the row (``UPDATE ... SET next_run_at = new WHERE id = ? AND next_run_at = old``) and, in the same
transaction, inserts the ``policy_runs`` row whose ``(operation_id, slot_at)`` is unique: however many scheduler
processes share the database, exactly one fires a slot. The claimed run is then handed to ``fire(run_id)``.

Retention is claimed the same way through ``retention_due_at`` and handed to ``retain(policy_id)``.
Every ``housekeeping_every`` seconds (first on the first pass) a pass also calls ``housekeep()`` (``bootstrap``
passes ``engine.housekeeping.housekeep``: finished jobs, unneeded change logs).

The clock is injectable (``clock`` returns naive UTC), so tests drive weeks of schedule through ``tick``.
The scheduler reads and writes only its own columns and rows; what a run does is the caller's (``bootstrap``
passes ``service.policy_runs.run_slot`` and ``apply_retention``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from opencsbs.core.errors import CSBSError
from opencsbs.core.schedule import parse_pattern
from opencsbs.core.timeutil import utcnow
from opencsbs.db.base import transaction
from opencsbs.db.models import PolicyRun, ScheduledOperation

log = logging.getLogger("opencsbs.scheduler")


@dataclass(frozen=True)
class Fired:
    """A slot this scheduler claimed: the run row, its operation, policy and slot time."""

    run_id: str
    operation_id: str
    policy_id: str
    slot_at: datetime


class Scheduler:
    """Fires due slots of scheduled operations.

    ``fire(run_id)`` runs a claimed slot; ``retain(policy_id)`` applies a policy's retention (optional);
    ``clock()`` is the current naive UTC time; ``interval`` seconds between passes of :meth:`run_forever`;
    ``retention_every`` between two retention passes of one operation; ``housekeep()`` runs every
    ``housekeeping_every`` seconds of real time (optional).
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        fire: Callable[[str], None],
        retain: Callable[[str], object] | None = None,
        clock: Callable[[], datetime] = utcnow,
        interval: float = 20.0,
        retention_every: timedelta = timedelta(hours=1),
        name: str = "scheduler",
        housekeep: Callable[[], object] | None = None,
        housekeeping_every: float = 3600.0,
        every_pass: Callable[[], object] | None = None,
    ):
        self.sessions = sessions
        self.fire = fire
        self.retain = retain
        self.clock = clock
        self.interval = interval
        self.retention_every = retention_every
        self.name = name
        self.housekeep = housekeep
        self.housekeeping_every = housekeeping_every
        #: called at the end of every pass (the bank's scheduled GC and verify, engine/bank_checks.py)
        self.every_pass = every_pass
        self._next_housekeeping = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- one pass ---------------------------------------------------------------------------------------

    def claim_due(self, now: datetime) -> list[Fired]:
        """Claim every due slot at ``now`` (compare-and-swap); returns the slots this scheduler won."""
        with self.sessions() as session:
            due = session.execute(
                select(ScheduledOperation.id, ScheduledOperation.policy_id, ScheduledOperation.project_id,
                       ScheduledOperation.pattern, ScheduledOperation.start_time, ScheduledOperation.next_run_at)
                .where(ScheduledOperation.enabled.is_(True), ScheduledOperation.next_run_at.is_not(None),
                       ScheduledOperation.next_run_at <= now)
                .order_by(ScheduledOperation.next_run_at)
            ).all()
        won: list[Fired] = []
        for op_id, policy_id, project_id, pattern, start_time, old_next in due:
            try:
                schedule = parse_pattern(pattern, start_time)
            except CSBSError:  # stored patterns were validated; a rule change could still reject one
                log.warning("scheduled operation %s has a pattern no longer accepted; disabling its schedule", op_id)
                self._cas(op_id, old_next, None, None)
                continue
            slot = max(schedule.latest_at_or_before(now), old_next)
            new_next = schedule.next_after(now)
            run_id = self._claim(op_id, policy_id, project_id, old_next, slot, new_next)
            if run_id is None:
                log.debug("policy %s slot %s: claimed by another scheduler", policy_id, slot.isoformat())
                continue
            missed = [p for p in schedule.between(old_next - timedelta(seconds=1), slot) if p < slot]
            if missed:
                log.info("policy %s: %d slot(s) from %s skipped: no scheduler ran then (only the latest, %s, "
                         "fires)", policy_id, len(missed), missed[0].isoformat(), slot.isoformat())
            log.info("policy %s slot %s due: run %s (next slot %s)", policy_id, slot.isoformat(), run_id,
                     new_next.isoformat())
            won.append(Fired(run_id, op_id, policy_id, slot))
        return won

    def _cas(self, op_id: str, old_next: datetime, new_next: datetime | None, slot: datetime | None) -> bool:
        with transaction(self.sessions) as session:
            result = session.execute(
                update(ScheduledOperation)
                .where(ScheduledOperation.id == op_id, ScheduledOperation.next_run_at == old_next)
                .values(next_run_at=new_next, last_slot_at=slot)
                .execution_options(synchronize_session=False)
            )
            return result.rowcount == 1

    def _claim(self, op_id: str, policy_id: str, project_id: str, old_next: datetime, slot: datetime,
               new_next: datetime) -> str | None:
        try:
            with transaction(self.sessions) as session:
                result = session.execute(
                    update(ScheduledOperation)
                    .where(ScheduledOperation.id == op_id, ScheduledOperation.next_run_at == old_next)
                    .values(next_run_at=new_next, last_slot_at=slot)
                    .execution_options(synchronize_session=False)
                )
                if result.rowcount != 1:
                    session.rollback()
                    return None
                run = PolicyRun(policy_id=policy_id, project_id=project_id, operation_id=op_id, slot_at=slot,
                                auto_trigger=True, status="running", checkpoint_ids=[], message="")
                session.add(run)
                session.flush()
                return run.id
        except IntegrityError:  # the slot already has its run (another scheduler, same slot): not ours
            return None

    def claim_retention(self, now: datetime) -> list[str]:
        """Claim the operations whose retention is due; returns their policy ids."""
        with self.sessions() as session:
            due = session.execute(
                select(ScheduledOperation.id, ScheduledOperation.policy_id, ScheduledOperation.retention_due_at)
                .where(or_(ScheduledOperation.retention_due_at.is_(None), ScheduledOperation.retention_due_at <= now))
            ).all()
        won = []
        for op_id, policy_id, old_due in due:
            cond = (ScheduledOperation.retention_due_at.is_(None) if old_due is None
                    else ScheduledOperation.retention_due_at == old_due)
            with transaction(self.sessions) as session:
                result = session.execute(
                    update(ScheduledOperation).where(ScheduledOperation.id == op_id, cond)
                    .values(retention_due_at=now + self.retention_every)
                    .execution_options(synchronize_session=False)
                )
                if result.rowcount == 1:
                    won.append(policy_id)
        return won

    def tick(self) -> list[Fired]:
        """One pass at ``clock()``: claim and fire due slots, then claim and apply due retention, then housekeeping
        when due. Returns the
        slots fired by this scheduler. A failing run is logged and does not stop the others."""
        now = self.clock()
        fired = self.claim_due(now)
        for f in fired:
            try:
                self.fire(f.run_id)
            except Exception:
                log.exception("scheduled run %s of policy %s failed", f.run_id, f.policy_id)
        if self.retain is not None:
            for policy_id in self.claim_retention(now):
                try:
                    self.retain(policy_id)
                except Exception:
                    log.exception("retention of policy %s failed", policy_id)
        if self.housekeep is not None and time.monotonic() >= self._next_housekeeping:
            self._next_housekeeping = time.monotonic() + self.housekeeping_every
            try:
                self.housekeep()
            except Exception:
                log.exception("housekeeping failed")
        if self.every_pass is not None:
            try:
                self.every_pass()
            except Exception:
                log.exception("scheduled bank checks failed")
        return fired

    # --- background thread ------------------------------------------------------------------------------

    def run_forever(self) -> None:
        """Tick every ``interval`` seconds until :meth:`stop`; a failing pass is logged and retried."""
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("scheduler pass failed")
            self._stop.wait(self.interval)

    def start(self) -> Scheduler:
        """Run :meth:`run_forever` in a daemon thread."""
        self._thread = threading.Thread(target=self.run_forever, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the loop to end and wait for the current pass."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
