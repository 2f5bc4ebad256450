"""core.schedule: what patterns are accepted, and when they fire."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opencsbs.core.errors import CSBSError
from opencsbs.core.schedule import parse_pattern

START = datetime(2026, 11, 30, 9, 15)  # a Monday


def ev(rrule: str) -> str:
    return f"BEGIN:VEVENT\r\nRRULE:{rrule}\r\nEND:VEVENT\r\n"


@pytest.mark.parametrize("pattern", [
    "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nRRULE:FREQ=WEEKLY;BYDAY=TH;BYHOUR=12;BYMINUTE=27\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
    "BEGIN:VCALENDAR\nBEGIN:VEVENT\nRRULE:FREQ=WEEKLY;BYDAY=TH;BYHOUR=12;BYMINUTE=27\nEND:VEVENT\nEND:VCALENDAR",
    "BEGIN:VCALENDAR\\r\\nBEGIN:VEVENT\\r\\nRRULE:FREQ=WEEKLY;BYDAY=TH;BYHOUR=12;BYMINUTE=27\\r\\nEND:VEVENT\\r\\nEND:VCALENDAR\\r\\n",
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//x//y//EN\r\nBEGIN:VEVENT\r\nRRULE:FREQ=WEEKLY;BYDAY=TH;BYHOUR=12;BYMINUTE=27\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
    ev("FREQ=WEEKLY;BYDAY=TH;BYHOUR=12;BYMINUTE=27;"),
    ev("freq=weekly;byday=th;byhour=12;byminute=27"),
])
def test_spellings_give_the_same_schedule(pattern):
    s = parse_pattern(pattern, START)
    assert (s.freq, s.weekdays, s.hours, s.minutes) == ("WEEKLY", (3,), (12,), (27,))
    assert s.next_after(START) == datetime(2026, 12, 3, 12, 27)


@pytest.mark.parametrize("pattern,why", [
    ("", "non-empty"),
    ("x" * 10241, "10240"),
    ("BEGIN:VTODO\r\nRRULE:FREQ=DAILY\r\nEND:VTODO\r\n", "VCALENDAR or a VEVENT"),
    ("RRULE:FREQ=DAILY", "iCalendar"),
    ("BEGIN:VEVENT\r\nRRULE:FREQ=DAILY\r\n", "iCalendar"),
    (ev("FREQ=HOURLY"), "DAILY or WEEKLY"),
    (ev("FREQ=MONTHLY;BYHOUR=1;BYMINUTE=0"), "DAILY or WEEKLY"),
    (ev("BYHOUR=1"), "DAILY or WEEKLY"),
    (ev("FREQ=DAILY;INTERVAL=2"), "INTERVAL"),
    (ev("FREQ=DAILY;COUNT=3"), "COUNT"),
    (ev("FREQ=DAILY;BYSECOND=3"), "BYSECOND"),
    (ev("FREQ=WEEKLY;BYDAY=1MO"), "BYDAY"),
    (ev("FREQ=WEEKLY;BYDAY=MO,MO"), "repeat"),
    (ev("FREQ=DAILY;BYHOUR=24"), "0..23"),
    (ev("FREQ=DAILY;BYMINUTE=60"), "0..59"),
    (ev("FREQ=DAILY;BYHOUR=x"), "parse"),
    (ev("FREQ=DAILY;BYHOUR=\u0661;BYMINUTE=0"), "digits 0-9"),  # ARABIC-INDIC DIGIT ONE, int() reads 1
    (ev("FREQ=DAILY;BYHOUR=\uff11;BYMINUTE=0"), "digits 0-9"),  # FULLWIDTH DIGIT ONE
    (ev("FREQ=DAILY;BYHOUR=1_0;BYMINUTE=0"), "digits 0-9"),  # int() reads 10
    (ev("FREQ=DAILY;BYHOUR=1;BYMINUTE=+5"), "digits 0-9"),
    (ev("FREQ=DAILY;BYHOUR=001;BYMINUTE=0"), "digits 0-9"),
    (ev("FREQ=DAILY;BYHOUR=1;BYMINUTE=0,59"), "one hour"),
    (ev("FREQ=DAILY;BYHOUR=0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23;BYMINUTE=0,1"), "24"),
    ("BEGIN:VEVENT\r\nDTSTART:20260101T000000Z\r\nRRULE:FREQ=DAILY\r\nEND:VEVENT\r\n", "nothing else"),
    ("BEGIN:VEVENT\r\nRRULE:FREQ=DAILY\r\nRRULE:FREQ=WEEKLY\r\nEND:VEVENT\r\n", "exactly one"),
    ("BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n", "one VEVENT"),
    ("BEGIN:VCALENDAR\r\nX-FOO:1\r\nBEGIN:VEVENT\r\nRRULE:FREQ=DAILY\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n", "calendar"),
])
def test_rejected(pattern, why):
    with pytest.raises(CSBSError) as err:
        parse_pattern(pattern, START)
    assert err.value.status == 400 and err.value.error_code == "CSBS.9001"
    assert why in err.value.error_msg


def test_a_rejected_pattern_names_the_callers_field_and_keeps_field_and_why_apart():
    from opencsbs.core.errors import InvalidField

    with pytest.raises(InvalidField) as err:
        parse_pattern(ev("FREQ=HOURLY"), START, field="check_schedule.pattern")
    assert (err.value.field, err.value.why) == ("check_schedule.pattern", "RRULE FREQ must be DAILY or WEEKLY")
    assert err.value.body() == {"error_code": "CSBS.9001", "error_msg": "Invalid request parameters: "
                                "check_schedule.pattern RRULE FREQ must be DAILY or WEEKLY"}
    assert err.value.status == 400
    with pytest.raises(InvalidField) as err:
        parse_pattern("", START)
    assert err.value.field == "trigger.properties.pattern" and err.value.why == "must be a non-empty string"


def test_hour_gap_across_midnight_and_week_end():
    # Sunday 23:10 then Monday 00:10: exactly one hour over the week boundary is allowed
    s = parse_pattern(ev("FREQ=WEEKLY;BYDAY=SU,MO;BYHOUR=0,23;BYMINUTE=10"), START)
    assert s.next_after(datetime(2026, 12, 6, 23, 10)) == datetime(2026, 12, 7, 0, 10)
    # 24 hourly points a day exactly one hour apart is the most allowed
    s = parse_pattern(ev("FREQ=DAILY;BYHOUR=" + ",".join(map(str, range(24))) + ";BYMINUTE=0"), START)
    assert len(s.week_points()) == 24 * 7


def test_defaults_come_from_start_time():
    s = parse_pattern(ev("FREQ=WEEKLY"), START)
    assert (s.weekdays, s.hours, s.minutes) == ((0,), (9,), (15,))
    s = parse_pattern(ev("FREQ=DAILY;BYHOUR=3"), START)
    assert (s.weekdays, s.hours, s.minutes) == (tuple(range(7)), (3,), (15,))


def test_occurrences():
    s = parse_pattern(ev("FREQ=WEEKLY;BYDAY=MO,FR;BYHOUR=2,14;BYMINUTE=5"), START)
    assert s.next_after(datetime(2026, 11, 30, 14, 5)) == datetime(2026, 12, 4, 2, 5)
    assert s.latest_at_or_before(datetime(2026, 11, 30, 14, 5)) == datetime(2026, 11, 30, 14, 5)
    assert s.latest_at_or_before(datetime(2026, 11, 30, 2, 4)) == datetime(2026, 11, 28 - 1, 14, 5)
    got = s.between(datetime(2026, 11, 30), datetime(2026, 12, 7, 2, 5))
    assert got == [datetime(2026, 11, 30, 2, 5), datetime(2026, 11, 30, 14, 5), datetime(2026, 12, 4, 2, 5),
                   datetime(2026, 12, 4, 14, 5), datetime(2026, 12, 7, 2, 5)]


days = st.lists(st.sampled_from(["MO", "TU", "WE", "TH", "FR", "SA", "SU"]), min_size=1, max_size=7, unique=True)
hours = st.lists(st.integers(0, 23), min_size=1, max_size=6, unique=True)


@settings(max_examples=150, deadline=None)
@given(days, hours, st.integers(0, 59), st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1)))
def test_next_and_latest_agree_with_the_rule(byday, byhour, minute, moment):
    try:
        s = parse_pattern(ev(f"FREQ=WEEKLY;BYDAY={','.join(byday)};BYHOUR={','.join(map(str, byhour))};"
                             f"BYMINUTE={minute}"), START)
    except CSBSError:
        return  # closer than an hour: rejection is covered elsewhere
    nxt = s.next_after(moment)
    prev = s.latest_at_or_before(moment)
    assert prev <= moment < nxt
    for p in (nxt, prev):
        assert ["MO", "TU", "WE", "TH", "FR", "SA", "SU"][p.weekday()] in byday
        assert p.hour in byhour and p.minute == minute and p.second == 0
    assert s.between(prev, nxt - timedelta(microseconds=1)) == []
