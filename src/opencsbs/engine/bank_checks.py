"""The bank's garbage collection and whole-bank verify on a schedule (``engine.gc_schedule``,
``engine.verify_schedule``: RRULEs in UTC as a policy's, parsed by ``core.schedule``).

Each scheduler pass calls :func:`run_due`. A check is due when its latest slot at or before now is later than the
end of its last run, read from the bank itself (``gc/finished``, ``verify/finished``: written by whichever process
sharing the bank ran it, ``opencsbs bank gc``/``bank verify`` included), so several schedulers on one bank run a
slot once or, racing, twice (both are safe: GC is safe to run concurrently, verify only reads). A slot missed
while no scheduler ran is caught up once, at the next pass. Without ``gc_schedule`` housekeeping keeps collecting
every ``gc_interval_seconds`` (engine/housekeeping.py).

GC runs in the scheduler's pass; a verify (it reads the whole bank) runs in a thread of its own, one at a time per
process. Each result is one log line with its figures (INFO; WARNING when a verify finds damage) and stays in the
bank's records, which ``opencsbs bank status`` and the ``opencsbs_bank_*`` metrics show.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from opencsbs.bank import GCReport
from opencsbs.bank.layout import read_record
from opencsbs.bank.verify import FINISHED_KEY as VERIFY_KEY
from opencsbs.bank.verify import VerifyReport
from opencsbs.core.schedule import Schedule, parse_pattern
from opencsbs.core.timeutil import utcnow
from opencsbs.engine.housekeeping import run_gc
from opencsbs.runtime import Runtime

log = logging.getLogger("opencsbs.engine")

GC_KEY = "gc/finished"
#: the start time a schedule's pattern is read with (WEEKLY without BYDAY: Mondays)
ANCHOR = datetime(2000, 1, 3)
_verifying = threading.Lock()


def bank_schedule(pattern: str, setting: str) -> Schedule:
    """The :class:`Schedule` of ``pattern``: a bare RRULE (``FREQ=DAILY;BYHOUR=3;BYMINUTE=0``, ``RRULE:`` prefix
    optional) or a whole VCALENDAR/VEVENT. Raises ``ValueError`` ``engine.<setting>: <why> (e.g. ...)``."""
    from opencsbs.core.errors import InvalidField

    text = pattern.strip()
    if not text.upper().startswith("BEGIN:"):
        text = f"BEGIN:VEVENT\r\nRRULE:{text.removeprefix('RRULE:')}\r\nEND:VEVENT\r\n"
    try:
        return parse_pattern(text, ANCHOR, field=f"engine.{setting}")
    except InvalidField as exc:
        raise ValueError(f"{exc.field}: {exc.why} (e.g. FREQ=DAILY;BYHOUR=3;BYMINUTE=0)") from None


def due_slot(schedule: Schedule, last_end: float | None, now: datetime) -> datetime | None:
    """The slot to run at ``now`` (naive UTC): the latest one at or before ``now`` when the last run ended
    (``last_end``, POSIX seconds; None: never ran) before it; else None."""
    slot = schedule.latest_at_or_before(now)
    if last_end is not None and datetime.fromtimestamp(last_end, UTC).replace(tzinfo=None) >= slot:
        return None
    return slot


def scheduled_gc(runtime: Runtime, now: datetime | None = None) -> GCReport | None:
    """Collect the bank's garbage when ``engine.gc_schedule`` has a due slot; returns the report (None: not due
    or not scheduled). Logged by :func:`~opencsbs.engine.housekeeping.run_gc`."""
    engine = runtime.settings.engine
    if not engine.gc_schedule:
        return None
    last = read_record(runtime.bank.store, GC_KEY)
    slot = due_slot(bank_schedule(engine.gc_schedule, "gc_schedule"), last and last["mtime"], now or utcnow())
    if slot is None:
        return None
    log.info("bank gc: slot %s fired (gc_schedule %s)", slot.isoformat(), engine.gc_schedule)
    return run_gc(runtime.bank, engine.gc_grace_seconds)


def scheduled_verify(runtime: Runtime, now: datetime | None = None) -> VerifyReport | None:
    """Verify the whole bank when ``engine.verify_schedule`` has a due slot (in this thread); returns the report
    (None: not due, not scheduled, or a verify of this process still running) and logs it."""
    engine = runtime.settings.engine
    if not engine.verify_schedule:
        return None
    last = read_record(runtime.bank.store, VERIFY_KEY)
    slot = due_slot(bank_schedule(engine.verify_schedule, "verify_schedule"), last and last["mtime"],
                    now or utcnow())
    if slot is None or not _verifying.acquire(blocking=False):
        return None
    try:
        log.info("bank verify: slot %s fired (verify_schedule %s)", slot.isoformat(), engine.verify_schedule)
        report = runtime.bank.verify()
    finally:
        _verifying.release()
    log_verify(report)
    return report


def log_verify(report: VerifyReport) -> None:
    """One line with the verify's figures: INFO when sound, WARNING naming the affected indexes otherwise."""
    figures = (f"{report.indexes_checked} indexes and {report.chunks_checked} chunks ({report.bytes_checked} "
               f"bytes) checked in {report.seconds:.1f} s")
    if report.ok:
        log.info("bank verify: ok: %s", figures)
        return
    affected = report.affected_indexes()
    log.warning("bank verify: damaged: %s; %d damaged indexes, %d damaged chunks, %d missing chunks; affected "
                "indexes: %s%s", figures, len(report.damaged_indexes), len(report.damaged_chunks),
                len(report.missing_chunks), ", ".join(affected[:10]), " ..." if len(affected) > 10 else "")


def run_due(runtime: Runtime, now: datetime | None = None) -> None:
    """One scheduler pass's bank checks: a due GC here, a due verify in a thread of its own. A failure is
    logged, never raised (the scheduler's other work goes on)."""
    try:
        scheduled_gc(runtime, now)
    except Exception:  # noqa: BLE001
        log.exception("scheduled bank gc failed")
    if runtime.settings.engine.verify_schedule and not _verifying.locked():
        threading.Thread(target=_verify_quietly, args=(runtime, now), name="bank-verify", daemon=True).start()


def _verify_quietly(runtime: Runtime, now: datetime | None) -> None:
    try:
        scheduled_verify(runtime, now)
    except Exception:  # noqa: BLE001
        log.exception("scheduled bank verify failed")
