"""The 12 tag calls as use cases, for backup policies (``csbs_backup_policy``) and backups (``csbs_backup``).

Sources: tag_management/*.rst; the rules live in ``core.tags``. A :class:`Resolver` per kind says which
resources exist, their names, the ``resource_detail`` of a query, and where their tags are kept: policy tags in
the ``tags`` table keyed by (resource kind, resource id); backup tags with the backup itself
(``checkpoint_items.tags``, written by protect and shown by the backup list), so that the two can never
disagree (docs/policies.md).

Errors: CSBS.3000 (unknown policy) / CSBS.3001 (unknown backup) as 404, CSBS.7000 (more than 10 tags),
CSBS.7001 (404, removing a tag that is not there), CSBS.9001 (invalid keys, values, lists, query).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, selectinload

from opencsbs.core import codes
from opencsbs.core import tags as rules
from opencsbs.core.errors import CSBSError, invalid
from opencsbs.core.lifecycle import ItemStatus
from opencsbs.db.base import dialect_of, in_ids, transaction
from opencsbs.db.models import CheckpointItem, Policy, Tag
from opencsbs.runtime import Runtime
from opencsbs.service.checkpoint_items import item_to_wire

POLICY, BACKUP = rules.POLICY, rules.BACKUP


@dataclass
class TaggedResource:
    """A resource that carries tags: its id, its name (for ``matches``) and its ``resource_detail``."""

    id: str
    name: str
    detail: dict = field(default_factory=dict)
    sort_key: object = None


@dataclass(frozen=True)
class Resolver:
    """How to find resources of one kind: ``one(session, project_id, id, lock)`` and
    ``every(session, project_id)``; ``not_found`` is raised for an unknown id. ``load(session, project_id,
    ids_or_None)`` gives ``{id: {key: value}}``; ``store(session, project_id, id, tags)`` replaces one's tags."""

    kind: str
    not_found: codes.Code
    one: Callable[[Session, str, str, bool], TaggedResource | None]
    every: Callable[[Session, str], list[TaggedResource]]
    load: Callable[[Session, str, list[str] | None], dict[str, dict[str, str]]]
    store: Callable[[Session, str, str, dict[str, str]], None]


def _policy_one(session: Session, project_id: str, resource_id: str, lock: bool) -> TaggedResource | None:
    stmt = select(Policy).where(Policy.id == resource_id, Policy.project_id == project_id)
    if lock:
        stmt = stmt.with_for_update()
    p = session.scalars(stmt).first()
    return None if p is None else TaggedResource(p.id, p.name, {}, (p.created_at, p.id))


def _policy_every(session: Session, project_id: str) -> list[TaggedResource]:
    rows = session.scalars(select(Policy).where(Policy.project_id == project_id))
    return [TaggedResource(p.id, p.name, {}, (p.created_at, p.id)) for p in rows]


def tags_of(session: Session, kind: str, resource_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    """``{resource_id: {key: value}}`` for ``kind`` (``policy``/``backup``)."""
    out: dict[str, dict[str, str]] = {rid: {} for rid in resource_ids}
    if not out:
        return out
    rows = session.scalars(select(Tag).where(Tag.resource_kind == kind,
                                             in_ids(Tag.resource_id, list(out), dialect_of(session))).order_by(Tag.key))
    for tag in rows:
        out.setdefault(tag.resource_id, {})[tag.key] = tag.value
    return out


def _table_load(kind: str):
    def load(session: Session, project_id: str, ids: list[str] | None) -> dict[str, dict[str, str]]:
        stmt = select(Tag).where(Tag.project_id == project_id, Tag.resource_kind == kind).order_by(Tag.key)
        out: dict[str, dict[str, str]] = {}
        if ids is not None:
            stmt = stmt.where(in_ids(Tag.resource_id, ids, dialect_of(session)))
        for t in session.scalars(stmt):
            out.setdefault(t.resource_id, {})[t.key] = t.value
        return out

    return load


def _table_store(kind: str):
    def store(session: Session, project_id: str, resource_id: str, tags: dict[str, str]) -> None:
        session.execute(delete(Tag).where(Tag.resource_kind == kind, Tag.resource_id == resource_id))
        for key, value in tags.items():
            session.add(Tag(project_id=project_id, resource_kind=kind, resource_id=resource_id, key=key,
                            value=value))
        session.flush()

    return store


def _live_items(session: Session, project_id: str):
    return (select(CheckpointItem).where(CheckpointItem.project_id == project_id,
                                         CheckpointItem.status != ItemStatus.DELETED))


def _backup_one(session: Session, project_id: str, resource_id: str, lock: bool) -> TaggedResource | None:
    stmt = _live_items(session, project_id).where(CheckpointItem.id == resource_id)
    if lock:
        stmt = stmt.with_for_update()
    item = session.scalars(stmt).first()
    return None if item is None else TaggedResource(item.id, item.name, item_to_wire(item), (item.created_at, item.id))


def _backup_every(session: Session, project_id: str) -> list[TaggedResource]:
    items = session.scalars(_live_items(session, project_id).options(selectinload(CheckpointItem.volume_backups)))
    return [TaggedResource(i.id, i.name, item_to_wire(i), (i.created_at, i.id)) for i in items]


def _backup_load(session: Session, project_id: str, ids: list[str] | None) -> dict[str, dict[str, str]]:
    stmt = select(CheckpointItem.id, CheckpointItem.tags).where(CheckpointItem.project_id == project_id,
                                                                 CheckpointItem.status != ItemStatus.DELETED)
    out: dict[str, dict[str, str]] = {}
    if ids is not None:
        stmt = stmt.where(in_ids(CheckpointItem.id, ids, dialect_of(session)))
    for item_id, tags in session.execute(stmt):
        out[item_id] = {str(t.get("key")): str(t.get("value", "")) for t in tags or [] if isinstance(t, dict)}
    return out


def _backup_store(session: Session, project_id: str, resource_id: str, tags: dict[str, str]) -> None:
    item = session.get(CheckpointItem, resource_id)
    item.tags = rules.to_wire(tags)
    session.flush()


RESOLVERS: dict[str, Resolver] = {
    POLICY: Resolver(POLICY, codes.POLICY_NOT_FOUND, _policy_one, _policy_every, _table_load(POLICY),
                     _table_store(POLICY)),
    BACKUP: Resolver(BACKUP, codes.CHECKPOINT_ITEM_NOT_FOUND, _backup_one, _backup_every, _backup_load,
                     _backup_store),
}


def _resolver(kind: str) -> Resolver:
    try:
        return RESOLVERS[kind]
    except KeyError:
        raise CSBSError(codes.SYSTEM_NOT_SUPPORTED) from None


def _require(session: Session, kind: str, project_id: str, resource_id: str, lock: bool = False) -> TaggedResource:
    resolver = _resolver(kind)
    found = resolver.one(session, project_id, resource_id, lock)
    if found is None:
        code = resolver.not_found
        raise CSBSError(code, resource_id) if "%s" in code.template else CSBSError(code)
    return found


def current(session: Session, project_id: str, kind: str, resource_id: str) -> dict[str, str]:
    """``{key: value}`` of one resource."""
    return _resolver(kind).load(session, project_id, [resource_id]).get(resource_id, {})


def write(session: Session, project_id: str, kind: str, resource_id: str, tags: dict[str, str]) -> None:
    """Replace the tags of one resource with ``tags`` (already validated)."""
    _resolver(kind).store(session, project_id, resource_id, tags)


def add_tag(runtime: Runtime, project_id: str, kind: str, resource_id: str, tag: object) -> None:
    """``POST .../{resource_id}/tags`` with ``{"tag": {"key", "value"}}``: set one tag (a key already there
    takes the new value)."""
    if not isinstance(tag, dict):
        raise invalid("tag must be an object")
    added = rules.clean_tag_list([tag], "tag")
    with transaction(runtime.sessions) as session:
        _require(session, kind, project_id, resource_id, lock=True)
        write(session, project_id, kind, resource_id, rules.merge(current(session, project_id, kind, resource_id), added))


def remove_tag(runtime: Runtime, project_id: str, kind: str, resource_id: str, key: str) -> None:
    """``DELETE .../{resource_id}/tags/{key}``: CSBS.7001 (404) when the key is not there."""
    key = rules.loose_key(key, "key")
    with transaction(runtime.sessions) as session:
        _require(session, kind, project_id, resource_id, lock=True)
        existing = current(session, project_id, kind, resource_id)
        if key not in existing:
            raise CSBSError(codes.TAG_NOT_FOUND)
        write(session, project_id, kind, resource_id, rules.remove(existing, [(key, None)]))


def batch(runtime: Runtime, project_id: str, kind: str, resource_id: str, body: object) -> None:
    """``POST .../{resource_id}/tags/action``: ``action`` ``create`` (set every tag, CSBS.7000 past 10) or
    ``delete`` (remove those there; a value, when given, must match)."""
    if not isinstance(body, dict):
        raise invalid("request body must be an object")
    action = body.get("action")
    if action not in ("create", "delete"):
        raise invalid("action must be 'create' or 'delete'")
    if action == "create":
        added = rules.clean_tag_list(body.get("tags"), "tags")
    else:
        doomed = rules.delete_list(body.get("tags"), "tags")
    with transaction(runtime.sessions) as session:
        _require(session, kind, project_id, resource_id, lock=True)
        existing = current(session, project_id, kind, resource_id)
        result = rules.merge(existing, added) if action == "create" else rules.remove(existing, doomed)
        write(session, project_id, kind, resource_id, result)


def resource_tags(runtime: Runtime, project_id: str, kind: str, resource_id: str) -> dict:
    """``GET .../{resource_id}/tags`` -> ``{"tags": [{"key", "value"}]}``."""
    with runtime.sessions() as session:
        _require(session, kind, project_id, resource_id)
        return {"tags": rules.to_wire(current(session, project_id, kind, resource_id))}


def project_tags(runtime: Runtime, project_id: str, kind: str) -> dict:
    """``GET .../tags`` -> ``{"tags": [{"key", "values"}]}`` over the project's resources of ``kind``."""
    resolver = _resolver(kind)
    with runtime.sessions() as session:
        every = resolver.load(session, project_id, None)
    return {"tags": rules.project_summary((k, v) for tags in every.values() for k, v in tags.items())}


def query(runtime: Runtime, project_id: str, kind: str, body: object) -> dict:
    """``POST .../resource_instances/action``: ``{"resources": [...], "total_count"}`` for ``filter`` (in
    creation order, ``offset``/``limit`` applied), ``{"total_count"}`` for ``count``."""
    q = rules.parse_query(body)
    resolver = _resolver(kind)
    with runtime.sessions() as session:
        resources = resolver.every(session, project_id)
        tags = resolver.load(session, project_id, None)
    hits = [r for r in resources if q.matches(tags.get(r.id, {}), r.name)]
    if q.action == "count":
        return {"total_count": len(hits)}
    hits.sort(key=lambda r: r.sort_key if r.sort_key is not None else r.id)
    page = hits[q.offset : q.offset + q.limit]
    out = []
    for r in page:
        wire_tags = rules.to_wire(tags.get(r.id, {}))
        detail = dict(r.detail)
        if detail:
            detail["tags"] = wire_tags
        out.append({"resource_id": r.id, "resource_name": r.name, "resource_detail": detail, "tags": wire_tags})
    return {"resources": out, "total_count": len(hits)}
