"""The ``sort`` query parameter of the list calls (checkpoint_items, policies): ``key1[:asc|desc],key2...``; and
the ``marker`` of every marker-paged list (:func:`page_anchor`).

Source: ``backup_management/querying_all_backups.rst`` and
``backup_policy_management/querying_the_backup_policy_list.rst``
(``sort``: ``<key1>[:<direction>],<key2>[:<direction>]``, at most 255 characters; direction ``asc`` or ``desc``,
default ``desc``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from opencsbs.core.errors import invalid

T = TypeVar("T")

SORT_MAX = 255


def parse_sort(text: str | None, keys: Sequence[str], default: Sequence[tuple[str, bool]], *,
               one_message: bool = False) -> list[tuple[str, bool]]:
    """``"name:asc,created_at"`` -> ``[("name", False), ("created_at", True)]``: ``(key, descending)`` pairs, a
    missing direction meaning descending; ``default`` when ``text`` is ``None`` or ``""``.

    Raises CSBS.9001 for a text over 255 characters, a key not in ``keys`` or a direction not ``asc``/``desc``
    (any case). The backup listing refuses a key given twice and says which of key or direction is wrong; the
    policy listing (``one_message=True``) names the whole faulty part in one message and takes a key twice.
    """
    if not text:
        return list(default)
    if len(text) > SORT_MAX:
        raise invalid(f"sort is longer than {SORT_MAX} characters")
    out: list[tuple[str, bool]] = []
    for part in text.split(","):
        key, _, direction = part.strip().partition(":")
        key, direction = key.strip(), (direction.strip().lower() or "desc")
        if one_message:
            if key not in keys or direction not in ("asc", "desc"):
                raise invalid(f"sort {part!r} is not <key>[:asc|desc] with key one of " + ", ".join(keys))
        else:
            if key not in keys:
                raise invalid(f"sort key {key!r} is not one of {', '.join(keys)}")
            if direction not in ("asc", "desc"):
                raise invalid(f"sort direction {direction!r} is not asc or desc")
            if key in (k for k, _ in out):
                raise invalid(f"sort key {key!r} given twice")
        out.append((key, direction == "desc"))
    return out


def page_anchor(row: T | None, marker: object) -> T:
    """The row (or entry) ``marker`` names, found by the caller in the list's own scope (the URL's project, the
    list's filters); ``None`` there is an unknown marker: 400 CSBS.9001 ``Invalid request parameters: marker <m>
    not found``. Every marker-paged list (checkpoint_items, policies, providers, servers, lock_audit, verify_runs,
    drills) refuses an unknown marker through this one function (docs/errors.md), rather than answering an empty
    or a first page."""
    if row is None:
        raise invalid(f"marker {marker} not found")
    return row
