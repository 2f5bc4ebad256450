"""Retention: which automatic backups of one server under one policy to keep, and which to delete.

Sources: ``creating_a_backup_policy.rst`` Table 7 (``max_backups``, ``retention_duration_days``, ``permanent``,
``day_backups``/``week_backups``/``month_backups``/``year_backups``, ``timezone``) and its note on precedence;
the user guide (``creating_a_backup_policy.rst``: long-term rules work together with the quantity rule;
"the latest backup of each day is retained"; at most 10 failed periodic backups, kept one month; retention
touches only automatic backups, never those registered as images). Where the pages are silent the rules follow
Proxmox Backup Server's prune (``keep-last``, ``keep-daily``, ...), as ``docs/policies.md`` explains.

The rules, for the available automatic backups of one server (``docs/policies.md`` has the examples):

1. ``permanent`` true: keep everything (it wins over every other setting).
2. A value of ``-1`` or ``0`` (or leaving it out) switches a limit off. With every limit off, keep everything.
3. Quantity (``max_backups`` = N, and the long-term ``day/week/month/year_backups``), applied like PBS prune,
   newest first: the N newest are kept ("last"); then, for day, week (ISO), month and year in that order, the
   newest backup of each period not yet represented is kept until that many periods are. A backup that is not
   kept by any of them is deleted. If ``max_backups`` is ``-1`` ("not cleared by quantity"), quantity deletes
   nothing, whatever the long-term values say.
4. Duration (``retention_duration_days`` = D): a backup created more than D days before ``now`` is deleted.
5. Quantity and duration both apply: a backup is deleted if either says so.
6. Failed backups (``status == "error"``): the 10 newest younger than 30 days are kept, the rest deleted.
7. Protected backups (registered as an image) are neither counted nor deleted.

Periods are computed in ``timezone`` (``UTC+08:00``, ``UTC-03:30``, ``UTC`` or an IANA name like
``Europe/Berlin``); without one, UTC.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo

from opencsbs.core.errors import invalid

FAILED_KEEP_COUNT = 10
FAILED_KEEP_DAYS = 30
LONG_TERM_MAX = 100
LIMIT_MAX = 99999
_OFFSET = re.compile(r"^(?:UTC|GMT)?\s*([+-])(\d{1,2})(?::?(\d{2}))?$")


@dataclass(frozen=True)
class BackupInfo:
    """One backup as retention sees it. ``created_at`` is naive UTC; ``status`` the wire status
    (``available``, ``error``, ...); ``protected`` true when registered as an image."""

    id: str
    created_at: datetime
    status: str = "available"
    protected: bool = False


@dataclass(frozen=True)
class RetentionRule:
    """The retention fields of a scheduled operation's ``operation_definition`` (None = not given)."""

    max_backups: int | None = None
    retention_duration_days: int | None = None
    permanent: bool | None = None
    day_backups: int | None = None
    week_backups: int | None = None
    month_backups: int | None = None
    year_backups: int | None = None
    timezone: str | None = None

    @classmethod
    def from_definition(cls, definition: dict) -> RetentionRule:
        """The rule in a stored ``operation_definition`` dict (unknown keys ignored)."""
        return cls(**{k: definition.get(k) for k in cls.__dataclass_fields__})

    @property
    def long_term(self) -> dict[str, int]:
        """The long-term limits that are on: ``{"day": n, ...}``."""
        pairs = (("day", self.day_backups), ("week", self.week_backups), ("month", self.month_backups),
                 ("year", self.year_backups))
        return {name: n for name, n in pairs if n is not None and n > 0}


def parse_timezone(name: str | None) -> tzinfo:
    """``UTC+08:00``/``UTC-3``/``+0530``/``UTC`` or an IANA zone name -> tzinfo. Raises ``CSBSError`` 400."""
    if name is None or name.strip().upper() in ("", "UTC", "GMT", "Z"):
        return timezone.utc
    text = name.strip()
    m = _OFFSET.match(text.upper())
    if m:
        sign, hours, minutes = m.group(1), int(m.group(2)), int(m.group(3) or 0)
        if hours > 14 or minutes > 59 or (hours == 14 and minutes):
            raise invalid(f"timezone {name!r} is out of range")
        delta = timedelta(hours=hours, minutes=minutes)
        return timezone(-delta if sign == "-" else delta)
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo(text)
    except Exception:
        raise invalid(f"timezone {name!r} is not like UTC+08:00") from None


def validate_rule(rule: RetentionRule) -> None:
    """Cross-field checks of the reference: ranges, and ``timezone`` required with (and only with) a
    long-term limit. Raises ``CSBSError`` CSBS.9001 (400)."""
    for name in ("max_backups", "retention_duration_days"):
        value = getattr(rule, name)
        if value is not None and not (value == -1 or 0 <= value <= LIMIT_MAX):
            raise invalid(f"{name} must be -1 or 0..{LIMIT_MAX}")
    for name in ("day_backups", "week_backups", "month_backups", "year_backups"):
        value = getattr(rule, name)
        if value is not None and not 0 <= value <= LONG_TERM_MAX:
            raise invalid(f"{name} must be 0..{LONG_TERM_MAX}")
    given = [n for n in ("day_backups", "week_backups", "month_backups", "year_backups") if getattr(rule, n) is not None]
    if given and not rule.timezone:
        raise invalid("timezone is mandatory with " + ", ".join(given))
    if rule.timezone and not given:
        raise invalid("timezone is set only with day/week/month/year_backups")
    if rule.timezone:
        parse_timezone(rule.timezone)


def _period_keys(tz: tzinfo) -> dict[str, Callable[[datetime], tuple]]:
    def local(b: datetime) -> datetime:
        return b.replace(tzinfo=timezone.utc).astimezone(tz)

    return {
        "day": lambda t: local(t).date().timetuple()[:3],
        "week": lambda t: tuple(local(t).isocalendar())[:2],
        "month": lambda t: (local(t).year, local(t).month),
        "year": lambda t: (local(t).year,),
    }


def _prune(ordered: Sequence[BackupInfo], last: int, long_term: dict[str, int], tz: tzinfo) -> set[str]:
    """PBS prune: ids kept by keep-last ``last`` and the long-term period rules (``ordered`` newest first)."""
    keep: set[str] = {b.id for b in ordered[:last]} if last > 0 else set()
    marked: set[str] = set(keep)
    keys = _period_keys(tz)
    for name in ("day", "week", "month", "year"):
        count = long_term.get(name)
        if not count:
            continue
        key = keys[name]
        already = {key(b.created_at) for b in ordered if b.id in keep}
        chosen: set[tuple] = set()
        for b in ordered:
            if b.id in marked:
                continue
            period = key(b.created_at)
            if period in already:
                continue
            if period not in chosen:
                if len(chosen) >= count:
                    break
                chosen.add(period)
                keep.add(b.id)
            marked.add(b.id)
    return keep


def plan(backups: Iterable[BackupInfo], rule: RetentionRule, now: datetime) -> tuple[set[str], set[str]]:
    """Split ``backups`` (one server's automatic backups under one policy) into ``(keep, delete)`` id sets.

    ``now`` is naive UTC. Backups neither available nor failed (still running, being deleted) are kept
    untouched. Pure: reads nothing else.
    """
    items = list(backups)
    keep: set[str] = set()
    delete: set[str] = set()
    available: list[BackupInfo] = []
    failed: list[BackupInfo] = []
    for b in items:
        if b.protected:
            keep.add(b.id)
        elif b.status == "available":
            available.append(b)
        elif b.status == "error":
            failed.append(b)
        else:
            keep.add(b.id)
    failed.sort(key=lambda b: (b.created_at, b.id), reverse=True)
    young = now - timedelta(days=FAILED_KEEP_DAYS)
    for i, b in enumerate(failed):
        (keep if i < FAILED_KEEP_COUNT and b.created_at >= young else delete).add(b.id)

    available.sort(key=lambda b: (b.created_at, b.id), reverse=True)
    if rule.permanent:
        keep.update(b.id for b in available)
        return keep, delete
    doomed: set[str] = set()
    max_backups = rule.max_backups if rule.max_backups is not None else 0
    long_term = rule.long_term
    if max_backups != -1 and (max_backups > 0 or long_term):
        kept = _prune(available, max_backups, long_term, parse_timezone(rule.timezone))
        doomed.update(b.id for b in available if b.id not in kept)
    days = rule.retention_duration_days
    if days is not None and days > 0:
        cutoff = now - timedelta(days=days)
        doomed.update(b.id for b in available if b.created_at < cutoff)
    for b in available:
        (delete if b.id in doomed else keep).add(b.id)
    return keep, delete
