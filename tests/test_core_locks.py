"""The pure rules of retention locks and legal holds (core/locks.py)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from opencsbs.core.locks import (COMPLIANCE, GOVERNANCE, Backup, Change, Hold, Lock, change_refusal,
                                 deletion_verdict, hold_covers, storage_retention, validate_days)

T0 = datetime(2026, 1, 1, 12, 0, 0)
B = Backup("b1", T0, policy_id="p1", tags={"env": "prod"})


def lock(mode=COMPLIANCE, days=30, policy_id=None, created=T0, cooling=72, lid="L"):
    return Lock(lid, mode, days, created, policy_id=policy_id, cooling_off_hours=cooling)


def test_no_lock_no_hold_deletable():
    assert deletion_verdict(B, [], [], T0).deletable


@pytest.mark.parametrize("mode", [GOVERNANCE, COMPLIANCE])
def test_a_lock_keeps_until_creation_plus_min_days(mode):
    v = deletion_verdict(B, [lock(mode)], [], T0 + timedelta(days=29, hours=23))
    assert not v.deletable and v.reason == "retention_lock" and v.mode == mode
    assert v.until == T0 + timedelta(days=30)
    assert deletion_verdict(B, [lock(mode)], [], T0 + timedelta(days=30)).deletable


def test_policy_lock_covers_only_its_policy():
    assert not deletion_verdict(B, [lock(policy_id="p1")], [], T0).deletable
    assert deletion_verdict(B, [lock(policy_id="p2")], [], T0).deletable
    assert deletion_verdict(Backup("m", T0), [lock(policy_id="p1")], [], T0).deletable  # manual backup


def test_longest_lock_wins_and_compliance_wins_ties():
    v = deletion_verdict(B, [lock(GOVERNANCE, 60, lid="g"), lock(COMPLIANCE, 30, lid="c")], [], T0)
    assert (v.lock_id, v.mode) == ("g", GOVERNANCE)
    v = deletion_verdict(B, [lock(GOVERNANCE, 30, lid="g"), lock(COMPLIANCE, 30, lid="c")], [], T0)
    assert (v.lock_id, v.mode) == ("c", COMPLIANCE)


def test_hold_beats_everything_until_released():
    hold = Hold("h", item_ids=frozenset({"b1"}))
    far = T0 + timedelta(days=10_000)
    v = deletion_verdict(B, [], [hold], far)
    assert not v.deletable and (v.reason, v.hold_id) == ("legal_hold", "h")
    released = Hold("h", item_ids=frozenset({"b1"}), released_at=T0)
    assert deletion_verdict(B, [], [released], far).deletable


@pytest.mark.parametrize("hold, covered", [
    (Hold("h", item_ids=frozenset({"other"})), False),
    (Hold("h", tag=("env", "prod")), True),
    (Hold("h", tag=("env", "dev")), False),
    (Hold("h", tag=("env", "prod"), policy_id="p2"), False),  # every given criterion must match
    (Hold("h", policy_id="p1"), True),
    (Hold("h", created_after=T0, created_before=T0), True),
    (Hold("h", created_after=T0 + timedelta(seconds=1)), False),
    (Hold("h", created_before=T0 - timedelta(seconds=1)), False),
])
def test_hold_selectors(hold, covered):
    assert hold_covers(hold, B) == covered


def test_compliance_lock_cannot_be_weakened_after_cooling_off_by_anybody():
    lk, now = lock(COMPLIANCE, cooling=72), T0 + timedelta(hours=72)
    for change in (Change(remove=True), Change(min_retention_days=29), Change(mode=GOVERNANCE)):
        assert change_refusal(lk, change, now, may_bypass_governance=True) == "immutable"
        assert change_refusal(lk, change, now - timedelta(seconds=1), may_bypass_governance=False) is None
    # strengthening stays allowed
    assert change_refusal(lk, Change(min_retention_days=31), now, False) is None
    assert change_refusal(lk, Change(max_retention_days=90), now, False) is None


def test_governance_lock_weakened_only_with_the_bypass_permission():
    lk = lock(GOVERNANCE)
    for change in (Change(remove=True), Change(min_retention_days=1)):
        assert change_refusal(lk, change, T0, may_bypass_governance=False) == "governance_bypass"
        assert change_refusal(lk, change, T0, may_bypass_governance=True) is None
    assert change_refusal(lk, Change(mode=COMPLIANCE), T0, False) is None
    assert change_refusal(lk, Change(min_retention_days=60), T0, False) is None


def test_validate_days():
    assert validate_days(1, None) is None and validate_days(30, 30) is None
    assert validate_days(0, None) and validate_days(36501, None) and validate_days(30, 29)


def test_storage_retention_takes_the_strongest_mode_and_the_longest_time():
    b = Backup("b", T0, policy_id="p")
    now = T0 + timedelta(days=1)
    assert storage_retention(b, [], now) is None
    assert storage_retention(b, [lock(GOVERNANCE, days=10, lid="g")], now) == ("GOVERNANCE", T0 + timedelta(days=10))
    both = [lock(GOVERNANCE, days=40, lid="g"), lock(COMPLIANCE, days=10, lid="c")]
    assert storage_retention(b, both, now) == ("COMPLIANCE", T0 + timedelta(days=40))
    # an expired lock or another policy's lock gives nothing
    assert storage_retention(b, [lock(COMPLIANCE, days=1)], T0 + timedelta(days=2)) is None
    assert storage_retention(b, [lock(COMPLIANCE, policy_id="other")], now) is None
