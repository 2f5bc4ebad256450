"""core.retention: property-based tests of what is kept (hypothesis) and worked examples."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opencsbs.core.errors import CSBSError
from opencsbs.core.retention import BackupInfo, RetentionRule, parse_timezone, plan, validate_rule

NOW = datetime(2026, 6, 15, 12, 0)

moments = st.datetimes(min_value=datetime(2023, 1, 1), max_value=NOW)
statuses = st.sampled_from(["available"] * 6 + ["error", "protecting", "deleting"])


@st.composite
def backup_lists(draw, min_size=0, max_size=40):
    times = draw(st.lists(moments, min_size=min_size, max_size=max_size))
    return [
        BackupInfo(f"b{i:03d}", t, draw(statuses), draw(st.booleans()) if draw(st.integers(0, 9)) == 0 else False)
        for i, t in enumerate(times)
    ]


limits = st.one_of(st.none(), st.just(-1), st.just(0), st.integers(1, 12))
long_terms = st.one_of(st.none(), st.integers(0, 6))
zones = st.sampled_from(["UTC", "UTC+08:00", "UTC-03:30", "Europe/Berlin", "UTC+14:00", "UTC-12:00"])


@st.composite
def rules(draw):
    lt = {k: draw(long_terms) for k in ("day_backups", "week_backups", "month_backups", "year_backups")}
    tz = draw(zones) if any(v is not None for v in lt.values()) else None
    return RetentionRule(max_backups=draw(limits), retention_duration_days=draw(st.one_of(st.none(), st.just(-1),
                         st.integers(0, 400))), permanent=draw(st.one_of(st.none(), st.booleans())), timezone=tz, **lt)


def available(backups):
    return sorted((b for b in backups if b.status == "available" and not b.protected),
                  key=lambda b: (b.created_at, b.id), reverse=True)


@settings(max_examples=300, deadline=None)
@given(backup_lists(), rules())
def test_partition_and_untouchables(backups, rule):
    keep, delete = plan(backups, rule, NOW)
    assert keep | delete == {b.id for b in backups}
    assert not keep & delete
    for b in backups:
        if b.protected or b.status not in ("available", "error"):
            assert b.id in keep


@settings(max_examples=300, deadline=None)
@given(backup_lists(), rules())
def test_idempotent(backups, rule):
    keep, _ = plan(backups, rule, NOW)
    survivors = [b for b in backups if b.id in keep]
    assert plan(survivors, rule, NOW)[1] == set()


@settings(max_examples=200, deadline=None)
@given(backup_lists(), rules())
def test_permanent_keeps_every_available_backup(backups, rule):
    rule = RetentionRule(**{**rule.__dict__, "permanent": True})
    keep, _ = plan(backups, rule, NOW)
    assert {b.id for b in available(backups)} <= keep


@settings(max_examples=200, deadline=None)
@given(backup_lists(), st.integers(1, 15))
def test_max_backups_alone_keeps_the_newest_n(backups, n):
    keep, _ = plan(backups, RetentionRule(max_backups=n), NOW)
    avail = available(backups)
    assert [b.id for b in avail if b.id in keep] == [b.id for b in avail[:n]]


@settings(max_examples=200, deadline=None)
@given(backup_lists(), st.integers(1, 500))
def test_duration_alone_keeps_exactly_the_young(backups, days):
    keep, _ = plan(backups, RetentionRule(retention_duration_days=days), NOW)
    cutoff = NOW - timedelta(days=days)
    for b in available(backups):
        assert (b.id in keep) == (b.created_at >= cutoff)


@settings(max_examples=200, deadline=None)
@given(backup_lists(), st.sampled_from([None, -1, 0]), st.sampled_from([None, -1, 0]))
def test_switched_off_limits_keep_everything(backups, max_backups, days):
    keep, _ = plan(backups, RetentionRule(max_backups=max_backups, retention_duration_days=days), NOW)
    assert {b.id for b in available(backups)} <= keep


@settings(max_examples=300, deadline=None)
@given(backup_lists(), st.integers(1, 8), zones)
def test_day_backups_alone_keep_newest_of_each_of_the_newest_days(backups, days, zone):
    tz = parse_timezone(zone)
    keep, _ = plan(backups, RetentionRule(day_backups=days, timezone=zone), NOW)
    newest_per_day: dict = {}
    for b in available(backups):  # newest first
        day = b.created_at.replace(tzinfo=timezone.utc).astimezone(tz).date()
        newest_per_day.setdefault(day, b.id)
    wanted = {newest_per_day[d] for d in sorted(newest_per_day, reverse=True)[:days]}
    assert {b.id for b in available(backups)} & keep == wanted


@settings(max_examples=300, deadline=None)
@given(backup_lists(), st.integers(1, 6), st.integers(1, 6), st.integers(0, 4), zones)
def test_last_and_long_term_together(backups, last, days, weeks, zone):
    rule = RetentionRule(max_backups=last, day_backups=days, week_backups=weeks, timezone=zone)
    keep, _ = plan(backups, rule, NOW)
    avail = available(backups)
    kept = [b for b in avail if b.id in keep]
    assert {b.id for b in avail[:last]} <= keep  # the newest N always stay
    assert len(kept) <= last + days + weeks
    tz = parse_timezone(zone)
    for b in kept[last:]:  # every extra one is the newest of its local day
        day = b.created_at.replace(tzinfo=timezone.utc).astimezone(tz).date()
        same_day = [o for o in avail if o.created_at.replace(tzinfo=timezone.utc).astimezone(tz).date() == day]
        assert same_day[0].id == b.id


@settings(max_examples=200, deadline=None)
@given(backup_lists(), st.integers(1, 5), st.integers(1, 60))
def test_quantity_and_duration_both_apply(backups, n, days):
    keep, _ = plan(backups, RetentionRule(max_backups=n, retention_duration_days=days), NOW)
    cutoff = NOW - timedelta(days=days)
    avail = available(backups)
    assert [b.id for b in avail if b.id in keep] == [b.id for b in avail[:n] if b.created_at >= cutoff]


def test_failed_backups_ten_newest_within_a_month():
    failed = [BackupInfo(f"f{i}", NOW - timedelta(days=i * 2), "error") for i in range(20)]
    keep, delete = plan(failed, RetentionRule(permanent=True), NOW)
    assert keep == {f"f{i}" for i in range(10)}
    assert delete == {f"f{i}" for i in range(10, 20)}
    old = [BackupInfo("old", NOW - timedelta(days=31), "error")]
    assert plan(old, RetentionRule(), NOW) == (set(), {"old"})


def test_worked_example_pbs_style():
    # one backup every 6 hours for 20 days
    backups = [BackupInfo(f"b{i:03d}", NOW - timedelta(hours=6 * i)) for i in range(80)]
    keep, _ = plan(backups, RetentionRule(max_backups=3, day_backups=5, week_backups=2, timezone="UTC"), NOW)
    # 3 newest: today 12:00, 06:00, 00:00 -> today's day already represented; then 5 more days (newest
    # of each: 18:00); then 2 more ISO weeks beyond those days
    expected = {"b000", "b001", "b002"} | {f"b{3 + 4 * d:03d}" for d in range(5)}
    kept_days = expected
    assert kept_days <= keep
    assert len(keep) == 10


def test_timezone_parsing_and_validation():
    assert parse_timezone("UTC+08:00").utcoffset(None) == timedelta(hours=8)
    assert parse_timezone("UTC-03:30").utcoffset(None) == -timedelta(hours=3, minutes=30)
    assert parse_timezone("UTC").utcoffset(None) == timedelta(0)
    for bad in ("UTC+15:00", "Mars/Base", "UTC+08:75"):
        with pytest.raises(CSBSError):
            parse_timezone(bad)
    with pytest.raises(CSBSError):
        validate_rule(RetentionRule(day_backups=3))
    with pytest.raises(CSBSError):
        validate_rule(RetentionRule(timezone="UTC+01:00"))
    with pytest.raises(CSBSError):
        validate_rule(RetentionRule(max_backups=-5))
    validate_rule(RetentionRule(max_backups=-1, retention_duration_days=99999, month_backups=0, timezone="UTC"))
