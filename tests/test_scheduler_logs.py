"""What the scheduler says at INFO: each slot due, fired (with the backups it started) or skipped (and why),
slots missed while no scheduler ran, and each retention deletion with its rule (captured log records)."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select

from engine_helpers import run_jobs
from opencsbs.bootstrap import make_scheduler
from opencsbs.db.models import CheckpointItem, ScheduledOperation
from policy_helpers import DB1, PROVIDER, create
from test_scheduler import T0, TWICE_DAILY, Clock, anchor, with_pattern


def _next(runtime, pid):
    with runtime.sessions() as session:
        return session.scalars(select(ScheduledOperation.next_run_at).where(ScheduledOperation.policy_id == pid)
                               ).one()


def _messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("opencsbs.") and r.levelno == logging.INFO]


def test_slots_fired_skipped_and_retention_deletions_are_logged(demo, runtime, caplog):
    client, headers = demo
    pid = create(client, headers, with_pattern("auto", TWICE_DAILY, resources=(DB1,), max_backups=1)
                 ).json()["policy"]["id"]
    anchor(runtime, pid, T0)
    clock = Clock(T0 + timedelta(days=1, hours=20))  # 02:30 and 14:30 of two days passed without a scheduler
    scheduler = make_scheduler(runtime, clock=clock)
    caplog.set_level(logging.INFO, logger="opencsbs")

    assert len(scheduler.tick()) == 1
    lines = _messages(caplog)
    assert f"policy {pid}: 3 slot(s) from 2026-11-30T02:30:00 skipped: no scheduler ran then (only the latest, " \
           "2026-12-01T14:30:00, fires)" in lines
    assert any(line.startswith(f"policy {pid} slot 2026-12-01T14:30:00 due: run ") and
               line.endswith("(next slot 2026-12-02T02:30:00)") for line in lines)
    assert any(line.startswith(f"policy {pid} slot 2026-12-01T14:30:00 fired: 1 backup(s) started (servers {DB1})")
               for line in lines), lines
    run_jobs(runtime)

    # a manual run still making its backup when the next slot comes: the slot is skipped, and the log says why
    manual = client.post(f"/v1/demo/providers/{PROVIDER}/checkpoints", headers=headers,
                         json={"checkpoint": {"plan_id": pid, "parameters": {"auto_trigger": False}}})
    assert manual.status_code == 200, manual.text
    caplog.clear()
    clock.now = _next(runtime, pid)
    scheduler.tick()
    assert any(line.startswith(f"policy {pid} slot 2026-12-02T02:30:00 skipped: a manual run of the policy is "
                               "still in progress") for line in _messages(caplog)), _messages(caplog)
    run_jobs(runtime)

    clock.now = _next(runtime, pid)
    scheduler.tick()
    run_jobs(runtime)
    caplog.clear()
    clock.now += timedelta(hours=2)  # retention is due again: the older automatic backup goes (max_backups 1)
    scheduler.tick()
    with runtime.sessions() as session:
        autos = list(session.scalars(select(CheckpointItem.id).where(CheckpointItem.policy_id == pid,
                                                                     CheckpointItem.auto_trigger.is_(True))
                                     .order_by(CheckpointItem.created_at)))
    assert len(autos) == 2
    assert f"retention of policy {pid}: deleting backup {autos[0]} of server {DB1}: beyond the 1 newest " \
           "(max_backups)" in _messages(caplog)
