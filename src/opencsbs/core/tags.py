"""Tag rules of backup policies and backups.

Sources: ``tag_management/*.rst`` and ``creating_a_backup_policy.rst`` (``resource_tag``): a key is 1-36
letters, digits, ``-`` or ``_``; a value 0-43 of the same; spaces before and after are dropped ("deprecated");
at most 10 tags per resource (CSBS.7000); keys unique per resource; deleting a missing tag is CSBS.7001.
Keys named in a delete or a query are looser (up to 127 characters; values up to 255): they are only trimmed
and checked non-empty, so even invalid tags can be removed.

The query of ``resource_instances/action`` (``match``): ``tags`` = every listed key present with one of its
values (an empty value list = any value); ``tags_any`` = at least one listed key matches; ``not_tags`` = not
all listed keys match; ``not_tags_any`` = none of the listed keys matches; ``matches`` ``resource_name`` =
substring match, or exact match when the value is empty. All given conditions must hold.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from opencsbs.core import codes
from opencsbs.core.errors import CSBSError, invalid

#: the kinds of resource a tag belongs to (``tags.resource_kind``)
POLICY = "policy"
BACKUP = "backup"

MAX_TAGS = 10
KEY_MAX = 36
VALUE_MAX = 43
LOOSE_KEY_MAX = 127
LOOSE_VALUE_MAX = 255
QUERY_MAX_VALUES = 10
QUERY_LIMIT_MAX = 1000
_CHARS = re.compile(r"^[A-Za-z0-9_-]*$")


def _bad(msg: str) -> CSBSError:
    return invalid(msg)


def clean_key(key: object, where: str = "tag") -> str:
    """A tag key to store: trimmed, 1-36 of ``[A-Za-z0-9_-]``. Raises CSBS.9001."""
    if not isinstance(key, str):
        raise _bad(f"{where}.key must be a string")
    key = key.strip()
    if not key:
        raise _bad(f"{where}.key must not be empty")
    if len(key) > KEY_MAX:
        raise _bad(f"{where}.key is longer than {KEY_MAX} characters")
    if not _CHARS.match(key):
        raise _bad(f"{where}.key may hold only letters, digits, '-' and '_'")
    return key


def clean_value(value: object, where: str = "tag") -> str:
    """A tag value to store: trimmed, 0-43 of ``[A-Za-z0-9_-]``. Raises CSBS.9001."""
    if not isinstance(value, str):
        raise _bad(f"{where}.value must be a string")
    value = value.strip()
    if len(value) > VALUE_MAX:
        raise _bad(f"{where}.value is longer than {VALUE_MAX} characters")
    if not _CHARS.match(value):
        raise _bad(f"{where}.value may hold only letters, digits, '-' and '_'")
    return value


def loose_key(key: object, where: str = "key") -> str:
    """A key that names a tag to delete or to query: trimmed, non-empty, at most 127 characters."""
    if not isinstance(key, str):
        raise _bad(f"{where} must be a string")
    key = key.strip()
    if not key:
        raise _bad(f"{where} must not be empty")
    if len(key) > LOOSE_KEY_MAX:
        raise _bad(f"{where} is longer than {LOOSE_KEY_MAX} characters")
    return key


def loose_value(value: object, where: str = "value") -> str:
    """A value that names a tag to delete or to query: trimmed, at most 255 characters."""
    if not isinstance(value, str):
        raise _bad(f"{where} must be a string")
    value = value.strip()
    if len(value) > LOOSE_VALUE_MAX:
        raise _bad(f"{where} is longer than {LOOSE_VALUE_MAX} characters")
    return value


def clean_tag_list(tags: Sequence[Mapping], where: str = "tags") -> dict[str, str]:
    """Validate a create-side list of ``{"key", "value"}``: non-empty, at most 10, unique keys (after
    trimming), each key/value valid. Returns ``{key: value}`` in order. Raises CSBS.9001 / CSBS.7000."""
    if not isinstance(tags, (list, tuple)) or not tags:
        raise _bad(f"{where} must be a non-empty list")
    out: dict[str, str] = {}
    for i, tag in enumerate(tags):
        if not isinstance(tag, Mapping):
            raise _bad(f"{where}[{i}] must be an object")
        if "value" not in tag:
            raise _bad(f"{where}[{i}].value is mandatory")
        key = clean_key(tag.get("key"), f"{where}[{i}]")
        if key in out:
            raise _bad(f"{where} holds the key {key!r} twice")
        out[key] = clean_value(tag.get("value"), f"{where}[{i}]")
    if len(out) > MAX_TAGS:
        raise CSBSError(codes.TAGS_OVER_LIMIT, MAX_TAGS)
    return out


def check_backup_tags(tags: Sequence[Mapping]) -> None:
    """The tags of a manual backup (``protect_param.resource_tag``-like ``[{"key", "value"}]``, keys and values
    trimmed): non-empty, at most 10 (CSBS.7000), unique keys, each key 1-36 and each value 0-43 of
    ``[A-Za-z0-9_-]``. Raises CSBS.9001 naming the first fault, in that order (the backup API's wording, which
    differs from :func:`clean_tag_list`'s)."""
    if not tags:
        raise invalid("tags must not be an empty list")
    if len(tags) > MAX_TAGS:
        raise CSBSError(codes.TAGS_OVER_LIMIT, MAX_TAGS)
    keys = [str(t.get("key", "")).strip() for t in tags]
    if len(set(keys)) != len(keys):
        raise invalid("tag keys must be unique")
    for t in tags:
        key = str(t.get("key", "")).strip()
        value = str(t.get("value", "")).strip()
        if not re.fullmatch(rf"[A-Za-z0-9_-]{{1,{KEY_MAX}}}", key):
            raise invalid(f"tag key {key!r} must be 1 to {KEY_MAX} letters, digits, '_' or '-'")
        if not re.fullmatch(rf"[A-Za-z0-9_-]{{0,{VALUE_MAX}}}", value):
            raise invalid(f"tag value {value!r} must be at most {VALUE_MAX} letters, digits, '_' or '-'")


def merge(existing: Mapping[str, str], added: Mapping[str, str]) -> dict[str, str]:
    """``existing`` with ``added`` set (a key present gets the new value). Raises CSBS.7000 when the result
    would hold more than 10 tags."""
    result = dict(existing)
    result.update(added)
    if len(result) > MAX_TAGS:
        raise CSBSError(codes.TAGS_OVER_LIMIT, MAX_TAGS)
    return result


def delete_list(tags: Sequence[Mapping], where: str = "tags") -> list[tuple[str, str | None]]:
    """Validate a batch-delete list: non-empty, at most 10, unique keys; value optional. Returns
    ``[(key, value_or_None)]``."""
    if not isinstance(tags, (list, tuple)) or not tags:
        raise _bad(f"{where} must be a non-empty list")
    out: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for i, tag in enumerate(tags):
        if not isinstance(tag, Mapping):
            raise _bad(f"{where}[{i}] must be an object")
        key = loose_key(tag.get("key"), f"{where}[{i}].key")
        if key in seen:
            raise _bad(f"{where} holds the key {key!r} twice")
        seen.add(key)
        value = tag.get("value")
        out.append((key, None if value is None else loose_value(value, f"{where}[{i}].value")))
    if len(out) > MAX_TAGS:
        raise CSBSError(codes.TAGS_OVER_LIMIT, MAX_TAGS)
    return out


def remove(existing: Mapping[str, str], doomed: Iterable[tuple[str, str | None]]) -> dict[str, str]:
    """``existing`` without the named tags: a ``(key, None)`` removes the key, ``(key, value)`` only when the
    value matches. Tags that are not there are skipped (a batch delete is idempotent)."""
    result = dict(existing)
    for key, value in doomed:
        if key in result and (value is None or result[key] == value):
            del result[key]
    return result


# --- the query of resource_instances/action ---------------------------------------------------------------


@dataclass(frozen=True)
class TagQuery:
    """A validated ``resource_instances/action`` body. ``tags``/``tags_any``/``not_tags``/``not_tags_any`` are
    ``{key: frozenset(values)}`` (empty set = any value) or None when not given."""

    action: str
    tags: dict[str, frozenset[str]] | None = None
    tags_any: dict[str, frozenset[str]] | None = None
    not_tags: dict[str, frozenset[str]] | None = None
    not_tags_any: dict[str, frozenset[str]] | None = None
    name: str | None = None
    limit: int = QUERY_LIMIT_MAX
    offset: int = 0

    def matches(self, tags: Mapping[str, str], resource_name: str) -> bool:
        """Whether a resource with ``tags`` and ``resource_name`` satisfies every given condition."""

        def hit(key: str, values: frozenset[str]) -> bool:
            return key in tags and (not values or tags[key] in values)

        if self.tags is not None and not all(hit(k, v) for k, v in self.tags.items()):
            return False
        if self.tags_any is not None and not any(hit(k, v) for k, v in self.tags_any.items()):
            return False
        if self.not_tags is not None and all(hit(k, v) for k, v in self.not_tags.items()):
            return False
        if self.not_tags_any is not None and any(hit(k, v) for k, v in self.not_tags_any.items()):
            return False
        if self.name is not None:
            if self.name == "":
                return resource_name == ""
            return self.name in (resource_name or "")
        return True


def _query_tags(value: object, where: str) -> dict[str, frozenset[str]]:
    if not isinstance(value, list) or not value:
        raise _bad(f"{where} must be a non-empty list")
    if len(value) > MAX_TAGS:
        raise _bad(f"{where} holds more than {MAX_TAGS} keys")
    out: dict[str, frozenset[str]] = {}
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise _bad(f"{where}[{i}] must be an object")
        key = loose_key(item.get("key"), f"{where}[{i}].key")
        if key in out:
            raise _bad(f"{where} holds the key {key!r} twice")
        values = item.get("values")
        if not isinstance(values, list):
            raise _bad(f"{where}[{i}].values must be a list")
        if len(values) > QUERY_MAX_VALUES:
            raise _bad(f"{where}[{i}].values holds more than {QUERY_MAX_VALUES} values")
        cleaned = [loose_value(v, f"{where}[{i}].values") for v in values]
        if len(set(cleaned)) != len(cleaned):
            raise _bad(f"{where}[{i}].values must be unique")
        out[key] = frozenset(cleaned)
    return out


def _int_param(value: object, where: str, low: int, high: int | None) -> int:
    if isinstance(value, bool):
        raise _bad(f"{where} must be an integer")
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        value = int(value)
    if not isinstance(value, int):
        raise _bad(f"{where} must be an integer")
    if value < low or (high is not None and value > high):
        raise _bad(f"{where} must be {low}..{high}" if high is not None else f"{where} must be >= {low}")
    return value


def parse_query(body: object) -> TagQuery:
    """Validate a ``resource_instances/action`` body (limit/offset may be strings, as the reference types
    them). Raises CSBS.9001 (400)."""
    if not isinstance(body, dict):
        raise _bad("request body must be an object")
    action = body.get("action")
    if action not in ("filter", "count"):
        raise _bad("action must be 'filter' or 'count'")
    kwargs: dict = {"action": action}
    for name in ("tags", "tags_any", "not_tags", "not_tags_any"):
        if body.get(name) is not None:
            kwargs[name] = _query_tags(body[name], name)
    matches = body.get("matches")
    if matches is not None:
        if not isinstance(matches, list) or not matches:
            raise _bad("matches must be a non-empty list")
        seen: set[str] = set()
        for i, m in enumerate(matches):
            if not isinstance(m, dict):
                raise _bad(f"matches[{i}] must be an object")
            key = m.get("key")
            if key != "resource_name":
                raise _bad(f"matches[{i}].key must be 'resource_name'")
            if key in seen:
                raise _bad("matches keys must be unique")
            seen.add(key)
            value = m.get("value")
            if not isinstance(value, str) or len(value) > LOOSE_VALUE_MAX:
                raise _bad(f"matches[{i}].value must be a string of at most {LOOSE_VALUE_MAX} characters")
            kwargs["name"] = value
    if action == "filter":
        if body.get("limit") is not None:
            kwargs["limit"] = _int_param(body["limit"], "limit", 1, QUERY_LIMIT_MAX)
        if body.get("offset") is not None:
            kwargs["offset"] = _int_param(body["offset"], "offset", 0, None)
    return TagQuery(**kwargs)


def project_summary(rows: Iterable[tuple[str, str]]) -> list[dict]:
    """``[{"key", "values": [...]}]`` from ``(key, value)`` pairs of a project's resources, keys and values
    sorted, values unique."""
    grouped: dict[str, set[str]] = {}
    for key, value in rows:
        grouped.setdefault(key, set()).add(value)
    return [{"key": k, "values": sorted(grouped[k])} for k in sorted(grouped)]


def to_wire(tags: Mapping[str, str]) -> list[dict]:
    """``[{"key", "value"}]`` sorted by key."""
    return [{"key": k, "value": tags[k]} for k in sorted(tags)]
