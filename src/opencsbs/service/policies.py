"""Backup policies as use cases: create, show, list, update, delete, and their wire shape.

Sources: backup_policy_management/*.rst (fields, codes), wire-fixtures/*policies*.json (what real clients
receive), the user guide (32 policies per project, 64 servers per policy). Decisions where the pages are
silent or disagree are in ``docs/policies.md``; the main ones:

- ``status`` is ``suspended`` for a new policy and stays so until an update changes whether its scheduled
  operation is enabled; then it reads ``enabled`` or ``disabled``. Scheduling follows the operation's
  ``enabled`` flag in every status.
- ``operation_definition`` numbers are strings in the create and update responses and JSON numbers in show
  and list (as the fixtures and both Go SDKs expect); ``permanent`` is shown only when true.
- One scheduled operation per policy (the update page: "A backup policy has only one backup period").

Errors: CSBS.0001 (quota), CSBS.9007 (duplicate name), CSBS.3000 (404 unknown policy), CSBS.6004 (a server
already bound to another policy), CSBS.6000/6001/6003 (a server that does not exist, is terminated, or is not a
server type), CSBS.9001 (any other invalid field).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, func, literal, or_, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, lazyload
from sqlalchemy.orm.attributes import set_committed_value

from opencsbs.auth.base import Principal
from opencsbs.core import codes
from opencsbs.core import tags as tag_rules
from opencsbs.core.errors import CSBSError, invalid
from opencsbs.core.listing import page_anchor, parse_sort
from opencsbs.core.retention import RetentionRule, validate_rule
from opencsbs.core.schedule import parse_pattern
from opencsbs.core.timeutil import utcnow, wire_ts
from opencsbs.db.base import dialect_of, in_ids, lock_project, transaction
from opencsbs.db.models import Policy, PolicyResource, ScheduledOperation, Tag
from opencsbs.runtime import Runtime
from opencsbs.service.tags import tags_of

SORT_KEYS = ("created_at", "updated_at", "name", "id", "status")
DEFINITION_NUMBERS = ("max_backups", "retention_duration_days", "day_backups", "week_backups", "month_backups",
                      "year_backups")
START_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


# --- wire shape -------------------------------------------------------------------------------------------


def definition_wire(op: ScheduledOperation, policy: Policy, strings: bool) -> dict:
    """``operation_definition`` as returned: numbers as strings when ``strings`` (create/update responses)."""
    stored = op.operation_definition or {}
    out: dict = {}
    for key in DEFINITION_NUMBERS:
        value = stored.get(key)
        if value is not None:
            out[key] = str(value) if strings else value
    if stored.get("permanent"):
        out["permanent"] = "True" if strings else True
    if stored.get("timezone"):
        out["timezone"] = stored["timezone"]
    out["plan_id"] = policy.id
    out["provider_id"] = policy.provider_id
    return out


def operation_wire(op: ScheduledOperation, policy: Policy, strings: bool) -> dict:
    """One ``scheduled_operation_resp``."""
    return {
        "id": op.id,
        "name": op.name or "",
        "description": op.description or "",
        "enabled": bool(op.enabled),
        "operation_type": op.operation_type,
        "operation_definition": definition_wire(op, policy, strings),
        "trigger": {
            "id": op.trigger_id,
            "name": op.trigger_name,
            "type": op.trigger_type,
            "properties": {
                "pattern": op.pattern,
                "start_time": op.start_time.strftime(START_TIME_FORMAT),
                "format": "ical",
            },
        },
        "trigger_id": op.trigger_id,
    }


def policy_wire(policy: Policy, tags: dict[str, str], strings: bool = False) -> dict:
    """One ``policy_resp``."""
    resources = []
    for r in policy.resources:
        item = {"id": r.resource_id, "type": r.resource_type, "name": r.name}
        if r.extra_info is not None:
            item["extra_info"] = r.extra_info
        resources.append(item)
    parameters = dict(policy.parameters or {})
    parameters.setdefault("common", {})
    return {
        "id": policy.id,
        "name": policy.name,
        "description": policy.description or "",
        "project_id": policy.project_id,
        "provider_id": policy.provider_id,
        "parameters": parameters,
        "resources": resources,
        "scheduled_operations": [operation_wire(op, policy, strings) for op in policy.scheduled_operations],
        "status": policy.status,
        "created_at": wire_ts(policy.created_at),
        "tags": tag_rules.to_wire(tags),
    }


# --- helpers ----------------------------------------------------------------------------------------------


def find_policy(session: Session, project_id: str, policy_id: str, lock: bool = False) -> Policy:
    """The policy ``policy_id`` of ``project_id`` or CSBS.3000 (404)."""
    query = select(Policy).where(Policy.id == policy_id, Policy.project_id == project_id)
    if lock:
        query = query.with_for_update()
    policy = session.scalars(query).first()
    if policy is None:
        raise CSBSError(codes.POLICY_NOT_FOUND)
    return policy


def _check_provider(runtime: Runtime, provider_id: str | None, where: str) -> None:
    if provider_id is not None and provider_id != runtime.settings.provider_id:
        raise invalid(f"{where} provider invalid")


def _check_resources(runtime: Runtime, principal: Principal, project_id: str, resources: list[dict]) -> None:
    """Duplicates, count, and that each is an existing server of the project (CSBS.6003/6000/6001)."""
    ids = [r["id"] for r in resources]
    if len(set(ids)) != len(ids):
        raise invalid("resources holds a server twice")
    limit = runtime.settings.policy_max_resources
    if len(ids) > limit:
        raise invalid(f"a policy holds at most {limit} servers")
    if not ids:
        return
    from opencsbs.service.protectable import check_protectable

    verdicts = check_protectable(runtime, principal, project_id, [(r["id"], r["type"]) for r in resources])
    refused = {codes.TYPE_NOT_PROTECTABLE.code, codes.SERVER_NOT_FOUND.code, codes.SERVER_TERMINATED.code}
    for v in verdicts:
        if v.error_code in refused:
            raise CSBSError(codes.lookup(v.error_code), message=v.error_msg)


def _bind_resources(session: Session, policy: Policy, resources: list[dict]) -> None:
    """Replace the policy's servers; CSBS.6004 for a server bound to another policy."""
    ids = [r["id"] for r in resources]
    if ids:
        taken = session.execute(
            select(PolicyResource.resource_id).where(
                PolicyResource.resource_id.in_(ids), PolicyResource.policy_id != policy.id
            )
        ).first()
        if taken is not None:
            raise CSBSError(codes.SERVER_BOUND_TO_POLICY, taken[0])
    policy.resources.clear()
    session.flush()
    for pos, r in enumerate(resources):
        policy.resources.append(
            PolicyResource(resource_id=r["id"], resource_type=r["type"], name=r.get("name") or "",
                           extra_info=r.get("extra_info"), position=pos)
        )


def _clean_definition(runtime: Runtime, definition: dict) -> dict:
    _check_provider(runtime, definition.get("provider_id"), "operation_definition.provider_id")
    stored = {k: v for k, v in definition.items() if v is not None and k not in ("plan_id", "provider_id")}
    validate_rule(RetentionRule.from_definition(stored))
    return stored


def merge_definition(stored: dict | None, given: dict) -> dict:
    """The ``operation_definition`` an update leaves: the stored one with the keys ``given`` sends replaced, a key
    sent as ``null`` removed, every key left out kept (docs/policies.md "Partial updates"). The caller validates
    the result as a whole (e.g. ``day_backups`` sent alone still finds the stored ``timezone``)."""
    merged = dict(stored or {})
    for key, value in given.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def _integrity(exc: IntegrityError, resources: list[dict]) -> CSBSError:
    text = str(exc.orig).lower()
    if "uq_policies_project_id_name" in text or "policies.project_id, policies.name" in text:
        return CSBSError(codes.DUPLICATE_POLICY_NAME)
    if "resource_id" in text:
        return CSBSError(codes.SERVER_BOUND_TO_POLICY, resources[0]["id"] if resources else "?")
    raise exc


def schedule_next(op: ScheduledOperation, now: datetime) -> None:
    """Set ``op.next_run_at`` to its first slot after ``now`` (None while disabled)."""
    if not op.enabled:
        op.next_run_at = None
        return
    op.next_run_at = parse_pattern(op.pattern, op.start_time).next_after(now)


# --- use cases --------------------------------------------------------------------------------------------


def create_policy(runtime: Runtime, principal: Principal, project_id: str, spec: dict) -> dict:
    """Create a policy from a validated ``policy_create`` dict; returns the create response's ``policy``."""
    _check_provider(runtime, spec["provider_id"], "provider_id")
    tags = tag_rules.clean_tag_list(spec["tags"], "tags") if spec.get("tags") is not None else {}
    resources = spec.get("resources") or []
    _check_resources(runtime, principal, project_id, resources)
    now = utcnow().replace(microsecond=0)
    ops = []
    for item in spec["scheduled_operations"]:
        start = now
        parse_pattern(item["trigger"]["properties"]["pattern"], start)
        ops.append((item, _clean_definition(runtime, item["operation_definition"]), start))
    try:
        with transaction(runtime.sessions) as session:
            lock_project(session, project_id, "policy_quota")  # count and insert as one step per project
            count = session.scalar(select(func.count()).select_from(Policy).where(Policy.project_id == project_id))
            if count >= runtime.settings.policy_quota:
                raise CSBSError(codes.POLICY_OVER_LIMIT)
            dup = session.scalar(select(Policy.id).where(Policy.project_id == project_id, Policy.name == spec["name"]))
            if dup is not None:
                raise CSBSError(codes.DUPLICATE_POLICY_NAME)
            policy = Policy(
                project_id=project_id, name=spec["name"], description=spec.get("description") or "",
                provider_id=spec["provider_id"], status="suspended",
                parameters=spec.get("parameters") or {"common": {}},
            )
            session.add(policy)
            session.flush()
            _bind_resources(session, policy, resources)
            for item, definition, start in ops:
                op = ScheduledOperation(
                    project_id=project_id, name=item.get("name"), description=item.get("description") or "",
                    enabled=item.get("enabled", True), operation_type=item["operation_type"],
                    operation_definition=definition, pattern=item["trigger"]["properties"]["pattern"],
                    start_time=start,
                )
                schedule_next(op, now)
                policy.scheduled_operations.append(op)
            for key, value in tags.items():
                session.add(Tag(project_id=project_id, resource_kind=tag_rules.POLICY, resource_id=policy.id,
                                key=key, value=value))
            session.flush()
            return policy_wire(policy, tags, strings=True)
    except IntegrityError as exc:
        raise _integrity(exc, resources) from None


def show_policy(runtime: Runtime, principal: Principal, project_id: str, policy_id: str) -> dict:
    """The ``policy`` of ``GET /policies/{policy_id}``."""
    with runtime.sessions() as session:
        policy = find_policy(session, project_id, policy_id)
        tags = tags_of(session, tag_rules.POLICY, [policy.id])[policy.id]
        return policy_wire(policy, tags)


@dataclass(frozen=True)
class ListQuery:
    """The list call's query parameters (already type-checked)."""

    marker: str | None = None
    limit: int | None = None
    sort: str | None = None
    name: str | None = None
    status: str | None = None
    offset: int | None = None
    all_tenants: bool = False


def list_policies(
    runtime: Runtime, principal: Principal, project_id: str, query: ListQuery
) -> tuple[list[dict], str | None]:
    """One page of policies and the marker of the next page (None on the last page). CSBS.9001 for a bad
    ``sort`` or a ``marker`` that is not a policy the filters select.

    Cost: at most six statements whatever the page size and the marker's depth: the marker's row, the page (the
    index ``project_id, created_at, id`` walked from the marker as a keyset, ``limit + 1`` rows), and the page's
    servers, scheduled operations and tags, one query each over the page's ids."""
    order = parse_sort(query.sort, SORT_KEYS, [("created_at", True), ("id", True)], one_message=True)
    seen: set[str] = set()
    order = [(k, d) for k, d in order if not (k in seen or seen.add(k))]  # a key given twice: its first counts
    if "id" not in (k for k, _ in order):
        order.append(("id", order[-1][1]))
    with runtime.sessions() as session:
        scope = []
        if not query.all_tenants:
            scope.append(Policy.project_id == project_id)
        if query.name is not None:
            scope.append(Policy.name == query.name)
        if query.status is not None:
            scope.append(Policy.status == query.status)
        conds = list(scope)
        if query.marker is not None:
            anchor = page_anchor(session.scalars(select(Policy).where(Policy.id == query.marker, *scope)).first(),
                                 query.marker)
            conds.append(_after(order, anchor))
        limit = query.limit if query.limit is not None else 1000
        stmt = (select(Policy).where(*conds)
                .options(lazyload(Policy.resources), lazyload(Policy.scheduled_operations))
                .order_by(*[getattr(Policy, k).desc() if d else getattr(Policy, k).asc() for k, d in order])
                .limit(limit + 1))
        if query.offset:
            stmt = stmt.offset(query.offset)
        policies = list(session.scalars(stmt))
        page, more = policies[:limit], len(policies) > limit
        _attach_children(session, page)
        tags = tags_of(session, tag_rules.POLICY, [p.id for p in page])
        body = [policy_wire(p, tags.get(p.id, {})) for p in page]
        return body, (page[-1].id if more and page else None)


def _after(order: list[tuple[str, bool]], anchor: Policy):
    """"Sorts after ``anchor``" in ``order``: one row-value comparison when every key goes one way (the default
    ``created_at, id`` desc, an index walk), else the OR of prefixes."""
    cols = [getattr(Policy, k) for k, _ in order]
    vals = [literal(getattr(anchor, k), col.type) for (k, _), col in zip(order, cols)]
    if len({d for _, d in order}) == 1:
        return tuple_(*cols) < tuple_(*vals) if order[0][1] else tuple_(*cols) > tuple_(*vals)
    return or_(*[and_(*[cols[j] == vals[j] for j in range(i)], cols[i] < vals[i] if d else cols[i] > vals[i])
                 for i, (_k, d) in enumerate(order)])


def _attach_children(session: Session, policies: list[Policy]) -> None:
    """Load the servers and scheduled operations of ``policies`` with one query each and set them as loaded."""
    if not policies:
        return
    ids = [p.id for p in policies]
    dialect = dialect_of(session)
    resources: dict[str, list[PolicyResource]] = {i: [] for i in ids}
    operations: dict[str, list[ScheduledOperation]] = {i: [] for i in ids}
    for r in session.scalars(select(PolicyResource).where(in_ids(PolicyResource.policy_id, ids, dialect))
                             .order_by(PolicyResource.position)):
        resources[r.policy_id].append(r)
    for op in session.scalars(select(ScheduledOperation).where(in_ids(ScheduledOperation.policy_id, ids, dialect))
                              .order_by(ScheduledOperation.created_at)):
        operations[op.policy_id].append(op)
    for p in policies:
        set_committed_value(p, "resources", resources[p.id])
        set_committed_value(p, "scheduled_operations", operations[p.id])


def update_policy(runtime: Runtime, principal: Principal, project_id: str, policy_id: str, spec: dict) -> dict:
    """Apply a validated ``policy_update`` dict (only the fields given); returns the update response's
    ``policy``."""
    resources = spec.get("resources")
    if resources is not None:
        _check_resources(runtime, principal, project_id, resources)
    now = utcnow()
    try:
        with transaction(runtime.sessions) as session:
            policy = find_policy(session, project_id, policy_id, lock=True)
            if spec.get("name") is not None and spec["name"] != policy.name:
                dup = session.scalar(
                    select(Policy.id).where(Policy.project_id == project_id, Policy.name == spec["name"])
                )
                if dup is not None:
                    raise CSBSError(codes.DUPLICATE_POLICY_NAME)
                policy.name = spec["name"]
            if spec.get("description") is not None:
                policy.description = spec["description"]
            if spec.get("parameters") is not None:
                policy.parameters = {**(policy.parameters or {}), **{k: v for k, v in spec["parameters"].items()
                                                                      if v is not None}}
            if resources is not None:
                _bind_resources(session, policy, resources)
            enabled_changed = False
            for item in spec.get("scheduled_operations") or []:
                op = next((o for o in policy.scheduled_operations if o.id == item["id"]), None)
                if op is None:
                    raise invalid(f"scheduled operation {item['id']} is not in the policy")
                if item.get("trigger_id") is not None and item["trigger_id"] != op.trigger_id:
                    raise invalid(f"trigger {item['trigger_id']} is not this operation's")
                reschedule = False
                if item.get("name") is not None:
                    op.name = item["name"]
                if item.get("description") is not None:
                    op.description = item["description"]
                if item.get("enabled") is not None and item["enabled"] != op.enabled:
                    op.enabled = item["enabled"]
                    enabled_changed = reschedule = True
                if item.get("operation_definition") is not None:
                    op.operation_definition = _clean_definition(
                        runtime, merge_definition(op.operation_definition, item["operation_definition"]))
                if item.get("trigger") is not None:
                    pattern = item["trigger"]["properties"]["pattern"]
                    parse_pattern(pattern, op.start_time)
                    if pattern != op.pattern:
                        op.pattern = pattern
                        reschedule = True
                if reschedule:
                    schedule_next(op, now)
            if enabled_changed:
                policy.status = "enabled" if any(o.enabled for o in policy.scheduled_operations) else "disabled"
            policy.updated_at = now
            session.flush()
            tags = tags_of(session, tag_rules.POLICY, [policy.id])[policy.id]
            body = policy_wire(policy, tags, strings=True)
            body["user_id"] = None
            return body
    except IntegrityError as exc:
        raise _integrity(exc, resources or []) from None


def delete_policy(runtime: Runtime, principal: Principal, project_id: str, policy_id: str) -> None:
    """Delete the policy, its bindings, schedule and tags; its backups stay (user guide)."""
    with transaction(runtime.sessions) as session:
        policy = find_policy(session, project_id, policy_id, lock=True)
        session.query(Tag).filter(Tag.resource_kind == tag_rules.POLICY, Tag.resource_id == policy.id).delete()
        session.delete(policy)
