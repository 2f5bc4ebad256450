"""Wire figures computed from byte counts and durations (pure arithmetic, no I/O)."""

from __future__ import annotations


def saving_ratio(source: int, stored: int) -> int:
    """Space saving in percent (0-100) of storing ``stored`` bytes for ``source`` bytes of disk."""
    if source <= 0:
        return 0
    return max(0, min(100, int(round(100 * (1 - stored / source)))))


def speed_kb(nbytes: int, seconds: float) -> int:
    """Average speed in KB/s (integer) of moving ``nbytes`` bytes in ``seconds`` seconds; 0 for no time."""
    return int(nbytes / 1024 / seconds) if seconds > 0 else 0
