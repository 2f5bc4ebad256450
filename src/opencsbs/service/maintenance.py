"""The bank's maintenance as an operator sees it: when its garbage collection and whole-bank verify last ended,
with what figures, and when the next scheduled ones are due (``engine.gc_schedule``/``verify_schedule``,
engine/bank_checks.py). Read by ``opencsbs bank status`` and the ``opencsbs_bank_*`` metrics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from opencsbs.bank.layout import read_record
from opencsbs.bank.verify import FINISHED_KEY as VERIFY_KEY
from opencsbs.core.timeutil import parse_wire_ts, utcnow, wire_ts
from opencsbs.engine.bank_checks import GC_KEY, bank_schedule
from opencsbs.runtime import Runtime


def _last(runtime: Runtime, key: str) -> dict[str, Any] | None:
    record = read_record(runtime.bank.store, key)
    if record is None:
        return None
    record["ended_at"] = wire_ts(datetime.fromtimestamp(record.pop("mtime"), UTC).replace(tzinfo=None))
    return record


def bank_status(runtime: Runtime, now: datetime | None = None) -> dict[str, Any]:
    """``{"gc": {"schedule", "interval_seconds", "grace_seconds", "next_slot", "last"}, "verify": {"schedule",
    "next_slot", "last"}}``. ``last``: the bank's record of the last run (by any process sharing the bank, the
    CLI's included) with ``ended_at`` (UTC) and its figures (GC: ``deleted_chunks``, ``freed_bytes``,
    ``reclaimable_bytes``, ``skipped_reason``; verify: ``ok``, ``indexes_checked``, ``chunks_checked``,
    ``bytes_checked``, ``damaged_indexes``, ``damaged_chunks``, ``missing_chunks``, ``affected_indexes``,
    ``seconds``), or None. ``next_slot``: the next scheduled time (UTC; GC every ``interval_seconds``: when it is due again, run by
    the next housekeeping pass after), None when nothing is scheduled. Raises the
    bank's errors when it cannot be read."""
    now = now or utcnow()
    engine = runtime.settings.engine

    def next_slot(key: str) -> str | None:
        pattern = getattr(engine, key)
        return wire_ts(bank_schedule(pattern, key).next_after(now)) if pattern else None

    interval = None if engine.gc_schedule or engine.gc_interval_seconds <= 0 else engine.gc_interval_seconds
    last_gc = _last(runtime, GC_KEY)
    gc_next = next_slot("gc_schedule")
    if interval is not None and last_gc is not None:  # due then; housekeeping runs it at its next pass after
        gc_next = wire_ts(parse_wire_ts(last_gc["ended_at"]) + timedelta(seconds=interval))
    return {
        "gc": {"schedule": engine.gc_schedule, "interval_seconds": interval, "grace_seconds": engine.gc_grace_seconds,
               "next_slot": gc_next, "last": last_gc},
        "verify": {"schedule": engine.verify_schedule, "next_slot": next_slot("verify_schedule"),
                   "last": _last(runtime, VERIFY_KEY)},
    }
