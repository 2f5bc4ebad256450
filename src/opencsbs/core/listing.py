"""The ``sort`` query parameter of the list calls (checkpoint_items, policies): ``key1[:asc|desc],key2...``.

Source: ``backup_management/querying_all_backups.rst`` and
``backup_policy_management/querying_the_backup_policy_list.rst``
(``sort``: ``<key1>[:<direction>],<key2>[:<direction>]``, at most 255 characters; direction ``asc`` or ``desc``,
default ``desc``).
"""

from __future__ import annotations

from collections.abc import Sequence

from opencsbs.core.errors import invalid

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
