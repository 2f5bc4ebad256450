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


def _prune(ordered: Sequence[BackupInfo], last: int, long_term: dict[str, int], tz: tzinfo) -> dict[str, str]:
    """PBS prune: the ids kept by keep-last ``last`` and the long-term period rules (``ordered`` newest first),
    each with the rule that keeps it (``"one of the 3 newest (max_backups)"``, ``"newest of its week
    (week_backups 4)"``)."""
    keep: dict[str, str] = {b.id: f"one of the {last} newest (max_backups)" for b in ordered[:last]} \
        if last > 0 else {}
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
                keep[b.id] = f"newest of its {name} ({name}_backups {count})"
            marked.add(b.id)
    return keep


#: the verdicts of :func:`decide`
KEEP = "keep"
DELETE = "delete"


def decide(backups: Iterable[BackupInfo], rule: RetentionRule, now: datetime) -> dict[str, tuple[str, str]]:
    """Each backup's verdict under ``rule`` at ``now`` (naive UTC): ``{id: ("keep"|"delete", why)}``, ``why``
    naming the rule that decided (``"older than 30 days (retention_duration_days)"``, ``"beyond the 3 newest
    (max_backups)"``, ``"failed backup beyond the 10 newest of the last 30 days"``, ...). One server's automatic
    backups under one policy; backups neither available nor failed (still running, being deleted) are kept
    untouched. Pure: reads nothing else."""
    out: dict[str, tuple[str, str]] = {}
    available: list[BackupInfo] = []
    failed: list[BackupInfo] = []
    for b in backups:
        if b.protected:
            out[b.id] = (KEEP, "registered as an image")
        elif b.status == "available":
            available.append(b)
        elif b.status == "error":
            failed.append(b)
        else:
            out[b.id] = (KEEP, f"{b.status}: not settled")
    failed.sort(key=lambda b: (b.created_at, b.id), reverse=True)
    young = now - timedelta(days=FAILED_KEEP_DAYS)
    for i, b in enumerate(failed):
        if i < FAILED_KEEP_COUNT and b.created_at >= young:
            out[b.id] = (KEEP, f"failed backup among the {FAILED_KEEP_COUNT} newest of the last "
                               f"{FAILED_KEEP_DAYS} days")
        else:
            out[b.id] = (DELETE, f"failed backup beyond the {FAILED_KEEP_COUNT} newest of the last "
                                 f"{FAILED_KEEP_DAYS} days")

    available.sort(key=lambda b: (b.created_at, b.id), reverse=True)
    if rule.permanent:
        out.update({b.id: (KEEP, "permanent") for b in available})
        return out
    doomed: dict[str, str] = {}
    kept_by: dict[str, str] = {}
    max_backups = rule.max_backups if rule.max_backups is not None else 0
    long_term = rule.long_term
    if max_backups != -1 and (max_backups > 0 or long_term):
        kept_by = _prune(available, max_backups, long_term, parse_timezone(rule.timezone))
        limits = ", ".join([f"the {max_backups} newest (max_backups)"] * (max_backups > 0)
                           + [f"{name}_backups {n}" for name, n in long_term.items()])
        doomed.update({b.id: f"beyond {limits}" for b in available if b.id not in kept_by})
    days = rule.retention_duration_days
    if days is not None and days > 0:
        cutoff = now - timedelta(days=days)
        for b in available:
            if b.created_at < cutoff:
                doomed[b.id] = f"older than {days} days (retention_duration_days)"
    for b in available:
        if b.id in doomed:
            out[b.id] = (DELETE, doomed[b.id])
        else:
            out[b.id] = (KEEP, kept_by.get(b.id) or (f"younger than {days} days (retention_duration_days)"
                                                     if days is not None and days > 0 else "no limit applies"))
    return out


def plan(backups: Iterable[BackupInfo], rule: RetentionRule, now: datetime) -> tuple[set[str], set[str]]:
    """Split ``backups`` (one server's automatic backups under one policy) into ``(keep, delete)`` id sets (the
    verdicts of :func:`decide`). ``now`` is naive UTC. Pure: reads nothing else."""
    verdicts = decide(backups, rule, now)
    return ({i for i, (verdict, _why) in verdicts.items() if verdict == KEEP},
            {i for i, (verdict, _why) in verdicts.items() if verdict == DELETE})
