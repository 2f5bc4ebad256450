"""check_protectable as a use case: gather the facts of a whole batch, then apply ``core.protectable``.

Cost per batch, whatever its size: one driver ``get_servers`` call, one query for running jobs
(``resource_locks``) and one for policy bindings (``policy_resources``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import bindparam, select

from opencsbs.auth.base import Principal
from opencsbs.clouds.base import CloudContext
from opencsbs.core.facts import ProtectionState
from opencsbs.core.protectable import Verdict, check_many
from opencsbs.db.base import RawQuery, in_ids
from opencsbs.db.models import Policy, PolicyResource, ResourceLock
from opencsbs.runtime import Runtime


#: running jobs and policy bindings of a batch (ids as one JSON array; see db.base.in_ids / RawQuery)
_LOCKS = RawQuery(lambda d: select(ResourceLock.resource_id, ResourceLock.operation).where(
    in_ids(ResourceLock.resource_id, bindparam("ids"), d)))
_BINDINGS = RawQuery(lambda d: (
    select(PolicyResource.resource_id, Policy.id, Policy.name)
    .join(Policy, Policy.id == PolicyResource.policy_id)
    .where(in_ids(PolicyResource.resource_id, bindparam("ids"), d))
))


def protection_states(runtime: Runtime, resource_ids: Sequence[str]) -> dict[str, ProtectionState]:
    """opencsbs's own knowledge of each server: a running backup/restore and its policy binding."""
    ids = list(dict.fromkeys(resource_ids))
    busy: dict[str, str] = {}
    bound: dict[str, tuple[str, str]] = {}
    if not ids:
        return {}
    payload = json.dumps(ids)
    with runtime.sessions() as session:
        conn = session.connection()
        for rid, operation in _LOCKS.rows(conn, ids=payload):
            busy[rid] = operation
        for rid, pid, pname in _BINDINGS.rows(conn, ids=payload):
            bound[rid] = (pid, pname)
    states = {}
    for rid in set(busy) | set(bound):
        pid, pname = bound.get(rid, (None, None))
        states[rid] = ProtectionState(busy_operation=busy.get(rid), policy_id=pid, policy_name=pname)
    return states


def check_protectable(
    runtime: Runtime, principal: Principal, project_id: str, items: Sequence[tuple[str, str]]
) -> list[Verdict]:
    """Verdicts for ``(resource_id, resource_type)`` items of ``project_id``, in request order.

    Raises ``CloudUnavailable`` (503) when the driver cannot ask its cloud.
    """
    ids = [rid for rid, _ in items]
    ctx = CloudContext(project_id=project_id, auth_token=principal.cloud_token(project_id))
    servers = runtime.driver.get_servers(ctx, ids)
    # A driver may return more than asked (or, under all_tenants, others' servers): keep the project's own.
    servers = {sid: s for sid, s in servers.items() if s.project_id == project_id}
    states = protection_states(runtime, ids)
    return check_many(items, servers, states, runtime.protectable_config)
