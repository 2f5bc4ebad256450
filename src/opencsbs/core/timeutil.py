"""Time formats of the CSBS wire.

Sources: wire-fixtures (``created_at`` ``2018-08-14T07:53:15.663766``: ISO without zone, microseconds,
always UTC) and the policy pages (trigger ``start_time`` ``YYYY-MM-DD HH:MM:SS``).
"""

from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    """The current time as a naive UTC datetime (what the database stores)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def wire_ts(value: datetime | None) -> str | None:
    """``YYYY-MM-DDTHH:MM:SS.ffffff`` (naive UTC); aware values are converted to UTC first; None stays None."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f")


def parse_wire_ts(text: str) -> datetime:
    """Parse a client-given timestamp (ISO 8601, with or without fraction or zone) into naive UTC.

    Raises ``ValueError`` for anything else.
    """
    text = text.strip().replace(" ", "T", 1) if "T" not in text else text.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    value = datetime.fromisoformat(text)
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value
