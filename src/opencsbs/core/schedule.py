"""Backup schedules: the ``trigger.properties.pattern`` of a scheduled operation (and the ``pattern`` of a verify
or drill schedule, which takes the same text: :func:`parse_pattern` names the caller's field in its errors).

Source: ``backup_policy_management/creating_a_backup_policy.rst`` (Table 9, ``pattern``): an iCalendar
(RFC 2445/5545) event whose RRULE may use only ``FREQ`` (``DAILY`` or ``WEEKLY``), ``BYDAY`` (``MO``..``SU``),
``BYHOUR`` (0-23) and ``BYMINUTE`` (0-59); at most 10,240 characters; runs at least one hour apart; at most 24
time points a day. The user guide adds that the one-hour rule holds across midnight ("the interval between the
last backup of the former day and the first backup of the latter day must be one hour or more").

Accepted spellings (all seen from real clients): a full ``BEGIN:VCALENDAR ... END:VCALENDAR`` or a bare
``BEGIN:VEVENT ... END:VEVENT``; ``\\r\\n`` or ``\\n`` line ends, also written as the two-character escapes
``\\r\\n``/``\\n`` inside the JSON string; a trailing ``;`` after the RRULE. The calendar may carry ``VERSION``,
``PRODID`` and ``CALSCALE``; the event carries exactly one ``RRULE`` and nothing else.

Times are UTC. A part the RRULE leaves out comes from the operation's ``start_time`` as RFC 5545 says (no
``BYHOUR`` = the hour of ``start_time``; ``WEEKLY`` without ``BYDAY`` = the weekday of ``start_time``).

Parsing uses ``icalendar``; occurrences come from ``dateutil.rrule``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from dateutil import rrule as du_rrule

from opencsbs.core.errors import InvalidField

MAX_PATTERN_CHARS = 10240
MAX_POINTS_PER_DAY = 24
MIN_INTERVAL_MINUTES = 60
WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
ALLOWED_PARTS = frozenset({"FREQ", "BYDAY", "BYHOUR", "BYMINUTE"})
ALLOWED_FREQS = frozenset({"DAILY", "WEEKLY"})
CALENDAR_PROPERTIES = frozenset({"VERSION", "PRODID", "CALSCALE"})
_WEEK_MINUTES = 7 * 24 * 60
#: RFC 5545 3.3.10: ``hour``/``minute`` = ``1*2DIGIT`` (ASCII digits only).
_RECUR_NUMBER = re.compile(r"[0-9]{1,2}")


#: the field :func:`parse_pattern` names unless told otherwise: a policy's scheduled operation
POLICY_FIELD = "trigger.properties.pattern"


class _Bad(Exception):
    """What is wrong with a pattern (``why``), raised by the checks below; :func:`parse_pattern` turns it into the
    CSBS.9001 naming the caller's field."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


def _bad(why: str) -> _Bad:
    return _Bad(why)


@dataclass(frozen=True)
class Schedule:
    """A parsed pattern: the UTC weekdays (0 = Monday), hours and minutes at which it fires.

    ``freq`` is ``"DAILY"`` or ``"WEEKLY"`` as written; every combination of ``weekdays`` x ``hours`` x
    ``minutes`` is a time point.
    """

    freq: str
    weekdays: tuple[int, ...]
    hours: tuple[int, ...]
    minutes: tuple[int, ...]

    def week_points(self) -> list[int]:
        """Minutes since Monday 00:00 of every time point in a week, ascending."""
        return sorted(d * 1440 + h * 60 + m for d in self.weekdays for h in self.hours for m in self.minutes)

    def _rule(self, dtstart: datetime) -> du_rrule.rrule:
        # The set of points does not depend on dtstart's phase (every BY part is explicit), so the rule is
        # anchored close to the asked time to keep dateutil's iteration short.
        return du_rrule.rrule(
            du_rrule.DAILY,
            dtstart=dtstart,
            byweekday=self.weekdays,
            byhour=self.hours,
            byminute=self.minutes,
            bysecond=0,
            cache=False,
        )

    def next_after(self, moment: datetime) -> datetime:
        """The first time point strictly after ``moment`` (naive UTC)."""
        anchor = datetime(moment.year, moment.month, moment.day)
        found = self._rule(anchor).after(moment, inc=False)
        assert found is not None  # a non-empty weekly set always recurs within 8 days
        return found

    def latest_at_or_before(self, moment: datetime) -> datetime:
        """The last time point at or before ``moment`` (naive UTC)."""
        anchor = datetime(moment.year, moment.month, moment.day) - timedelta(days=8)
        found = self._rule(anchor).before(moment, inc=True)
        assert found is not None
        return found

    def between(self, start: datetime, end: datetime) -> list[datetime]:
        """Every time point ``p`` with ``start < p <= end``."""
        if end <= start:
            return []
        anchor = datetime(start.year, start.month, start.day)
        return [p for p in self._rule(anchor).between(start, end, inc=True) if p > start]


def _normalise_text(pattern: str) -> str:
    text = pattern.replace("\\r\\n", "\n").replace("\\n", "\n").replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.strip() for line in text.split("\n")]
    return "\r\n".join(line for line in lines if line) + "\r\n"


def _event_rrule(text: str):
    from icalendar import Calendar

    try:
        component = Calendar.from_ical(text)
    except Exception:  # icalendar raises ValueError/KeyError/IndexError on malformed input
        raise _bad("is not an iCalendar event (e.g. BEGIN:VEVENT\\r\\nRRULE:FREQ=DAILY;BYHOUR=2;BYMINUTE=0\\r\\n"
                   "END:VEVENT)") from None
    if isinstance(component, list):
        raise _bad("must hold one calendar or one event")
    if component.name == "VCALENDAR":
        extra = set(component.keys()) - CALENDAR_PROPERTIES
        if extra:
            raise _bad(f"has unsupported calendar properties {sorted(extra)}")
        events = component.subcomponents
        if len(events) != 1 or events[0].name != "VEVENT":
            raise _bad("must hold exactly one VEVENT")
        event = events[0]
    elif component.name == "VEVENT":
        event = component
    else:
        raise _bad(f"must be a VCALENDAR or a VEVENT, not {component.name}")
    if event.subcomponents:
        raise _bad("VEVENT must not hold nested components")
    if set(event.keys()) != {"RRULE"}:
        raise _bad("VEVENT must hold exactly one RRULE and nothing else")
    rrule = event["RRULE"]
    if isinstance(rrule, list):
        raise _bad("VEVENT must hold exactly one RRULE")
    return rrule


def _check_number_spelling(text: str) -> None:
    """Refuse BYHOUR/BYMINUTE values that are not 1 or 2 ASCII digits: icalendar reads them with ``int()``,
    which also takes ``+5``, ``1_0`` (10) and non-ASCII digits (``\u0661``), and the pattern is stored as
    sent."""
    for line in text.split("\r\n"):
        name, _, value = line.partition(":")
        if name.split(";")[0].strip().upper() != "RRULE":
            continue
        for part in value.split(";"):
            key, _, values = part.partition("=")
            key = key.strip().upper()
            if key in ("BYHOUR", "BYMINUTE") and not all(_RECUR_NUMBER.fullmatch(v) for v in values.split(",")):
                high = 23 if key == "BYHOUR" else 59
                raise _bad(f"RRULE {key} values must be integers 0..{high} written with one or two digits 0-9")


def _ints(values, name: str, low: int, high: int) -> tuple[int, ...]:
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
            raise _bad(f"{name} values must be integers {low}..{high}")
        out.append(v)
    if len(set(out)) != len(out):
        raise _bad(f"{name} values must not repeat")
    return tuple(sorted(out))


def parse_pattern(pattern: str, start_time: datetime, *, field: str = POLICY_FIELD) -> Schedule:
    """Validate ``pattern`` and return its :class:`Schedule`; ``start_time`` (naive UTC) supplies the parts the
    RRULE leaves out.

    Raises :class:`~opencsbs.core.errors.InvalidField` (CSBS.9001, 400) saying what is wrong (its ``why``) for
    anything the reference does not allow; its message names ``field`` (its ``field``), the request's field that
    holds the pattern (``Invalid request parameters: check_schedule.pattern is not an iCalendar event ...``), by
    default a policy's ``trigger.properties.pattern``.
    """
    try:
        return _parse(pattern, start_time)
    except _Bad as exc:
        raise InvalidField(field, exc.why) from None


def _parse(pattern: str, start_time: datetime) -> Schedule:
    if not isinstance(pattern, str) or not pattern.strip():
        raise _bad("must be a non-empty string")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise _bad(f"is longer than {MAX_PATTERN_CHARS} characters")
    text = _normalise_text(pattern)
    rule = _event_rrule(text)
    try:
        parts = {str(k).upper(): list(v) for k, v in rule.items()}
    except Exception as exc:  # icalendar defers value errors ("broken property") to first access
        raise _bad(f"has an RRULE that does not parse ({exc.__class__.__name__})") from None
    unknown = set(parts) - ALLOWED_PARTS
    if unknown:
        raise _bad(f"RRULE may use only FREQ, BYDAY, BYHOUR and BYMINUTE, not {', '.join(sorted(unknown))}")
    _check_number_spelling(text)
    freqs = [str(f).upper() for f in parts.get("FREQ", [])]
    if len(freqs) != 1 or freqs[0] not in ALLOWED_FREQS:
        raise _bad("RRULE FREQ must be DAILY or WEEKLY")
    freq = freqs[0]
    days = [str(d).upper() for d in parts.get("BYDAY", [])]
    for d in days:
        if d not in WEEKDAYS:
            raise _bad("RRULE BYDAY values must be MO, TU, WE, TH, FR, SA or SU")
    if len(set(days)) != len(days):
        raise _bad("RRULE BYDAY values must not repeat")
    if "BYDAY" in parts and not days:
        raise _bad("RRULE BYDAY must not be empty")
    if days:
        weekdays = tuple(sorted(WEEKDAYS.index(d) for d in days))
    elif freq == "WEEKLY":
        weekdays = (start_time.weekday(),)
    else:
        weekdays = tuple(range(7))
    hours = _ints(parts["BYHOUR"], "RRULE BYHOUR", 0, 23) if "BYHOUR" in parts else (start_time.hour,)
    minutes = _ints(parts["BYMINUTE"], "RRULE BYMINUTE", 0, 59) if "BYMINUTE" in parts else (start_time.minute,)
    if not hours or not minutes:
        raise _bad("RRULE BYHOUR and BYMINUTE must not be empty")
    if len(hours) * len(minutes) > MAX_POINTS_PER_DAY:
        raise _bad(f"allows at most {MAX_POINTS_PER_DAY} time points a day")
    schedule = Schedule(freq, weekdays, hours, minutes)
    points = schedule.week_points()
    gaps = [b - a for a, b in zip(points, points[1:])] + [points[0] + _WEEK_MINUTES - points[-1]]
    if min(gaps) < MIN_INTERVAL_MINUTES:
        raise _bad("runs less than one hour apart")
    return schedule
