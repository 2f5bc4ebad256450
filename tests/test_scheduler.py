"""The policy scheduler with an injected clock: weeks of slots in seconds, missed slots, enable/disable, three
schedulers on one PostgreSQL firing each slot exactly once, and automatic backups through the real engine."""

from __future__ import annotations

import multiprocessing
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from conftest import PG_ADMIN_URL, _pg_exec, _pg_url, require_component
from engine_helpers import run_jobs
from opencsbs.bootstrap import make_scheduler, start_scheduler
from opencsbs.db.base import make_engine, make_sessionmaker
from opencsbs.db.models import CheckpointItem, PolicyRun, ScheduledOperation
from opencsbs.engine.scheduler import Scheduler
from policy_helpers import DB1, body, create

TWICE_DAILY = "BEGIN:VEVENT\r\nRRULE:FREQ=DAILY;BYHOUR=2,14;BYMINUTE=30\r\nEND:VEVENT\r\n"
WEEKLY = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nRRULE:FREQ=WEEKLY;BYDAY=MO,TH;BYHOUR=12;BYMINUTE=0\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"


class Clock:
    """A settable naive-UTC clock."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def with_pattern(name, pattern, resources=(), enabled=True, **op_def):
    b = body(name, resources=resources, **(op_def or {"max_backups": 3}))
    op = b["policy"]["scheduled_operations"][0]
    op["trigger"]["properties"]["pattern"] = pattern
    op["enabled"] = enabled
    return b


def anchor(runtime, policy_id: str, at: datetime) -> None:
    """Pretend the policy was created at ``at`` (the fake clock's epoch): next slot counted from there."""
    from opencsbs.core.schedule import parse_pattern
    from opencsbs.db.base import transaction

    with transaction(runtime.sessions) as session:
        op = session.scalars(select(ScheduledOperation).where(ScheduledOperation.policy_id == policy_id)).one()
        op.start_time = at
        op.next_run_at = parse_pattern(op.pattern, at).next_after(at) if op.enabled else None


def recorder():
    fired: list[str] = []
    return fired, fired.append


def slots(runtime, policy_id):
    with runtime.sessions() as session:
        return [r.slot_at for r in session.scalars(select(PolicyRun).where(PolicyRun.policy_id == policy_id)
                                                   .order_by(PolicyRun.slot_at))]


T0 = datetime(2026, 11, 30, 0, 0)  # a Monday


def test_two_weeks_of_slots_fire_on_time(demo, runtime):
    client, headers = demo
    daily = create(client, headers, with_pattern("daily", TWICE_DAILY)).json()["policy"]["id"]
    weekly = create(client, headers, with_pattern("weekly", WEEKLY)).json()["policy"]["id"]
    off = create(client, headers, with_pattern("off", TWICE_DAILY, enabled=False)).json()["policy"]["id"]
    for pid in (daily, weekly, off):
        anchor(runtime, pid, T0)
    clock = Clock(T0)
    fired, fire = recorder()
    scheduler = Scheduler(runtime.sessions, fire, clock=clock)
    while clock.now < T0 + timedelta(days=14):
        clock.now += timedelta(minutes=10)
        scheduler.tick()
    assert slots(runtime, daily) == [T0 + timedelta(days=d, hours=h, minutes=30) for d in range(14) for h in (2, 14)]
    assert slots(runtime, weekly) == [T0 + timedelta(days=d, hours=12) for d in (0, 3, 7, 10)]
    assert slots(runtime, off) == []
    assert len(fired) == 28 + 4 and len(set(fired)) == len(fired)


def test_missed_slots_after_downtime_run_once(demo, runtime):
    client, headers = demo
    pid = create(client, headers, with_pattern("daily", TWICE_DAILY)).json()["policy"]["id"]
    anchor(runtime, pid, T0)
    clock = Clock(T0 + timedelta(days=3, hours=20))  # down from Monday 00:00 to Thursday 20:00: 8 slots missed
    fired, fire = recorder()
    scheduler = Scheduler(runtime.sessions, fire, clock=clock)
    scheduler.tick()
    scheduler.tick()
    assert slots(runtime, pid) == [T0 + timedelta(days=3, hours=14, minutes=30)]
    clock.now = T0 + timedelta(days=4, hours=2, minutes=30)
    scheduler.tick()
    assert slots(runtime, pid)[-1] == T0 + timedelta(days=4, hours=2, minutes=30) and len(fired) == 2


def test_disable_and_enable_through_the_api(demo, runtime):
    client, headers = demo
    p = create(client, headers, with_pattern("daily", TWICE_DAILY)).json()["policy"]
    anchor(runtime, p["id"], T0)
    url = f"/v1/demo/policies/{p['id']}"
    op_id = p["scheduled_operations"][0]["id"]
    clock = Clock(T0)
    fired, fire = recorder()
    scheduler = Scheduler(runtime.sessions, fire, clock=clock)
    client.put(url, json={"policy": {"scheduled_operations": [{"id": op_id, "enabled": False}]}}, headers=headers)
    clock.now = T0 + timedelta(days=2)
    scheduler.tick()
    assert fired == []
    # enabled again: the next slot counts from the real time of the change, no catch-up of the disabled days
    client.put(url, json={"policy": {"scheduled_operations": [{"id": op_id, "enabled": True}]}}, headers=headers)
    with runtime.sessions() as session:
        nxt = session.get(ScheduledOperation, op_id).next_run_at
    assert nxt is not None and nxt.minute == 30 and nxt.hour in (2, 14)
    clock.now = nxt - timedelta(seconds=1)
    scheduler.tick()
    assert fired == []
    clock.now = nxt
    scheduler.tick()
    assert len(fired) == 1
    # a new pattern reschedules
    client.put(url, json={"policy": {"scheduled_operations": [{"id": op_id, "trigger": {"properties": {
        "pattern": WEEKLY}}}]}}, headers=headers)
    with runtime.sessions() as session:
        nxt = session.get(ScheduledOperation, op_id).next_run_at
    assert nxt.weekday() in (0, 3) and (nxt.hour, nxt.minute) == (12, 0)


def _scheduler_process(pg_url, n, steps, barrier, now, results) -> None:
    """One scheduler process of the exactly-once test: a pass per step of the shared clock ``now``."""
    fired: list[str] = []
    error = None
    engine = make_engine(pg_url)
    try:
        clock = lambda: datetime.fromtimestamp(now.value, timezone.utc).replace(tzinfo=None)  # noqa: E731
        scheduler = Scheduler(make_sessionmaker(engine), fired.append, clock=clock, name=f"s{n}")
        for _ in range(steps):
            barrier.wait(timeout=120)  # the clock moved
            scheduler.tick()
            barrier.wait(timeout=120)  # every scheduler finished this pass
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        error = repr(exc)
        barrier.abort()
    finally:
        engine.dispose()
    results.put((n, fired, error))


@pytest.fixture
def pg_url():
    """A fresh PostgreSQL database at the newest schema (whatever OPENCSBS_TEST_DB says)."""
    try:
        _pg_exec("SELECT 1")
        ok = True
    except Exception:
        ok = False
    require_component(ok, f"PostgreSQL not reachable at {PG_ADMIN_URL}")
    from opencsbs.db.migrate import upgrade

    name = f"opencsbs_sched_{uuid.uuid4().hex[:10]}"
    _pg_exec(f'CREATE DATABASE "{name}"')
    upgrade(_pg_url(name))
    yield _pg_url(name)
    _pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.postgres
def test_three_schedulers_on_postgresql_fire_each_slot_exactly_once(pg_url, tmp_path):
    from opencsbs.config import Settings
    from opencsbs.bootstrap import build_runtime
    from opencsbs.service.policies import create_policy
    from opencsbs.auth.base import Principal

    settings = Settings(data_dir=tmp_path / "data", database_url=pg_url, workers=0, scheduler=False)
    runtime = build_runtime(settings, migrate=False)
    try:
        principal = Principal("demo", "u", frozenset({"member"}))
        ids = []
        patterns = [TWICE_DAILY, WEEKLY, "BEGIN:VEVENT\nRRULE:FREQ=DAILY;BYHOUR=" + ",".join(map(str, range(0, 24, 3)))
                    + ";BYMINUTE=15\nEND:VEVENT"]
        for i in range(9):
            spec = with_pattern(f"p{i}", patterns[i % 3])["policy"]
            ids.append(create_policy(runtime, principal, "demo", spec)["id"])
        for pid in ids:
            anchor(runtime, pid, T0)
    finally:
        runtime.close()

    # three scheduler processes, each with its own connections, stepping one shared clock through a week in
    # half hours; each step every process runs one pass at the same clock time
    ctx = multiprocessing.get_context("fork")
    steps = 7 * 24 * 2
    barrier = ctx.Barrier(4)
    now = ctx.Value("d", T0.replace(tzinfo=timezone.utc).timestamp())
    results = ctx.Queue()
    procs = [ctx.Process(target=_scheduler_process, args=(pg_url, n, steps, barrier, now, results))
             for n in range(3)]
    for proc in procs:
        proc.start()
    try:
        for step in range(1, steps + 1):
            now.value = (T0 + timedelta(minutes=30 * step)).replace(tzinfo=timezone.utc).timestamp()
            barrier.wait(timeout=120)
            barrier.wait(timeout=120)
        fired_by = [[] for _ in range(3)]
        errors = []
        for _ in procs:
            n, fired, error = results.get(timeout=120)
            fired_by[n] = fired
            if error:
                errors.append(error)
    finally:
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
    assert not errors, errors
    assert all(proc.exitcode == 0 for proc in procs)

    engines = [make_engine(pg_url)]
    sessions = make_sessionmaker(engines[0])
    with sessions() as session:
        runs = list(session.scalars(select(PolicyRun)))
    per_slot = Counter((r.operation_id, r.slot_at) for r in runs)
    assert per_slot and max(per_slot.values()) == 1
    all_fired = [x for f in fired_by for x in f]
    assert sorted(all_fired) == sorted(r.id for r in runs)
    # every slot of the week, per pattern: 14 (twice daily), 2 (Mon, Thu), 56 (every 3 hours)
    per_op = Counter(r.operation_id for r in runs)
    assert sorted(per_op.values()) == sorted([14, 14, 14, 2, 2, 2, 56, 56, 56])
    assert sum(1 for f in fired_by if f) >= 2, "the slots were not shared out between the schedulers"
    for e in engines:
        e.dispose()


def test_scheduled_runs_make_automatic_backups_and_apply_retention(demo, runtime):
    client, headers = demo
    pid = create(client, headers, with_pattern("auto", TWICE_DAILY, resources=(DB1,), max_backups=2)).json()["policy"]["id"]
    anchor(runtime, pid, T0)
    clock = Clock(T0)
    scheduler = make_scheduler(runtime, clock=clock)
    for _ in range(4):  # four slots: 02:30, 14:30 on two days
        with runtime.sessions() as session:
            nxt = session.scalars(select(ScheduledOperation.next_run_at)
                                  .where(ScheduledOperation.policy_id == pid)).one()
        clock.now = nxt
        assert len(scheduler.tick()) == 1
        run_jobs(runtime)
    clock.now += timedelta(hours=2)  # retention is due again (every hour by default)
    scheduler.tick()
    run_jobs(runtime)
    with runtime.sessions() as session:
        made = list(session.scalars(select(CheckpointItem).where(CheckpointItem.policy_id == pid)
                                    .order_by(CheckpointItem.created_at)))
        runs = list(session.scalars(select(PolicyRun).where(PolicyRun.policy_id == pid)))
    assert [i.auto_trigger for i in made] == [True] * 4
    assert all(i.name.startswith("autobk_") for i in made)
    assert [i.status for i in made] == ["deleted", "deleted", "available", "available"]
    assert {r.status for r in runs} == {"done"} and all(len(r.checkpoint_ids) == 1 for r in runs)


def test_runtime_scheduler_thread_fires_a_due_slot(demo, runtime):
    """What ``opencsbs serve`` starts (unless ``scheduler: false``): a background scheduler on the real clock."""
    import time

    from opencsbs.core.timeutil import utcnow
    from opencsbs.db.base import transaction

    client, headers = demo
    pid = create(client, headers, with_pattern("now", TWICE_DAILY)).json()["policy"]["id"]
    with transaction(runtime.sessions) as session:
        op = session.scalars(select(ScheduledOperation).where(ScheduledOperation.policy_id == pid)).one()
        op.next_run_at = utcnow() - timedelta(minutes=1)
    runtime.settings.scheduler_interval = 0.05
    start_scheduler(runtime)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not slots(runtime, pid):
        time.sleep(0.05)
    runtime.close()
    assert len(slots(runtime, pid)) == 1
